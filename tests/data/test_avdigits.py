"""AV-digits datamodule and raw-data download/verification, on a tiny fake raw dir written to tmp_path."""

import inspect
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from mmfw.contracts import TaskSpec
from mmfw.data import avdigits as avdigits_module
from mmfw.data import download
from mmfw.data.avdigits import AVDigitsDataModule
from mmfw.data.avdigits_build import _pca_residual
from mmfw.data.download import DataDigestWarning, DataUnavailableError, ensure_raw_data

SPEAKERS = ("alice", "bob", "carol")
REPO = Path(__file__).resolve().parents[2]


def make_raw_dir(root: Path, *, takes: int = 2) -> Path:
    """FSDD-like recordings (a tone per digit, 3 speakers) and a small mnist.npz with random 28×28 images."""
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for speaker_index, speaker in enumerate(SPEAKERS):
        for digit in range(10):
            for take in range(takes):
                seconds = 0.2 + 0.1 * take + 0.05 * speaker_index
                t = np.arange(int(8000 * seconds)) / 8000
                wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * digit) * t)
                sf.write(recordings / f"{digit}_{speaker}_{take}.wav", wave.astype(np.float32), 8000, subtype="PCM_16")
    (root / "mnist").mkdir()
    np.savez(
        root / "mnist" / "mnist.npz",
        x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        y_train=np.arange(60, dtype=np.uint8) % 10,
        x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_test=np.arange(20, dtype=np.uint8) % 10,
    )
    return root


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw_dir(tmp_path_factory.mktemp("avdigits_raw"))


def small_dm(raw: Path, cache: Path, **kwargs) -> AVDigitsDataModule:
    params = dict(
        raw_dir=str(raw),
        cache_dir=str(cache),
        modalities=["image", "audio"],
        train_size=30,
        val_size=10,
        test_size=12,
        test_speaker="carol",
        val_speaker="bob",
        n_mels=16,
        num_frames=24,
        batch_size=8,
        seed=3,
        pca_variance_removed=0.5,  # with 30 training images, 99% would leave (almost) nothing of them
        download=False,
    )
    params.update(kwargs)
    return AVDigitsDataModule(**params)


def ready(dm: AVDigitsDataModule, stage: str | None = None) -> AVDigitsDataModule:
    with pytest.warns(DataDigestWarning):  # fake data is not the reference copy
        dm.prepare_data()
        dm.setup(stage)
    return dm


def test_batch_contract(raw_dir: Path, tmp_path: Path) -> None:
    dm = ready(small_dm(raw_dir, tmp_path))
    assert dm.modalities == ["image", "audio"]
    assert dm.task == TaskSpec("multiclass", 10, [str(d) for d in range(10)])
    assert dm.encoder_inputs == {"image": {"in_chans": 1}, "audio": {"in_chans": 1}}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "audio", "mask", "target", "modalities"}
    assert batch["image"].shape == (8, 1, 28, 28) and batch["image"].dtype == torch.float32
    assert batch["audio"].shape == (8, 1, 16, 24) and batch["audio"].dtype == torch.float32
    assert batch["mask"].shape == (8, 2) and batch["mask"].dtype == torch.bool and batch["mask"].all()
    assert batch["target"].dtype == torch.long
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [30, 10, 12]
    for split in ("train", "val", "test"):
        for name in ("image", "audio"):
            assert torch.isfinite(dm.datasets[split].inputs[name]).all()
    # Standardised with training statistics.
    assert dm.datasets["train"].inputs["image"].std().item() == pytest.approx(1.0, rel=1e-3)
    assert dm.datasets["train"].inputs["audio"].mean().item() == pytest.approx(0.0, abs=1e-4)


def test_pairs_match_digit_and_speaker_split(raw_dir: Path, tmp_path: Path) -> None:
    dm = ready(small_dm(raw_dir, tmp_path))
    folder = dm.processed_dir(ensure_raw_data(dm.raw_dir, dm.cache_dir, download=False))
    names = dm.meta["recordings"]
    expected = {"train": {"alice"}, "val": {"bob"}, "test": {"carol"}}
    for split, speakers in expected.items():
        with np.load(folder / f"{split}.npz") as data:
            files = [names[r] for r in data["recording"]]
            assert [int(f.split("_")[0]) for f in files] == data["target"].tolist()
            assert {f.split("_")[1] for f in files} == speakers
            # Within a digit, recordings are used equally often (±1), not drawn i.i.d.
            for digit in range(10):
                used = data["recording"][data["target"] == digit]
                counts = np.unique(used, return_counts=True)[1]
                assert len(used) == 0 or counts.max() - counts.min() <= 1


def test_modality_subset(raw_dir: Path, tmp_path: Path) -> None:
    dm = ready(small_dm(raw_dir, tmp_path, modalities=["audio"]), "fit")
    assert dm.encoder_inputs == {"audio": {"in_chans": 1}}
    assert set(dm.datasets) == {"train", "val"}
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"audio", "mask", "target", "modalities"} and batch["mask"].shape == (8, 1)


def test_unknown_modality_names_config_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`modalities`.*video.*\['image', 'audio'\]"):
        small_dm(tmp_path, tmp_path, modalities=["image", "video"])


def test_cache_is_reused_and_deterministic(raw_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ready(small_dm(raw_dir, tmp_path))

    def no_rebuild(**_):
        raise AssertionError("cache was not reused")

    monkeypatch.setattr(avdigits_module, "build_avdigits", no_rebuild)
    second = ready(small_dm(raw_dir, tmp_path, batch_size=4))  # loader settings do not change the data
    for split in ("train", "val", "test"):
        for name in ("image", "audio"):
            torch.testing.assert_close(first.datasets[split].inputs[name], second.datasets[split].inputs[name])
    monkeypatch.undo()
    # A fresh build in another cache gives the same arrays (noise depends on seed + pair index only) ...
    rebuilt = ready(small_dm(raw_dir, tmp_path / "other"))
    torch.testing.assert_close(first.datasets["test"].inputs["audio"], rebuilt.datasets["test"].inputs["audio"])
    # ... and another seed other ones, in another cache folder.
    reseeded = ready(small_dm(raw_dir, tmp_path, seed=4))
    assert not torch.equal(first.datasets["test"].inputs["audio"], reseeded.datasets["test"].inputs["audio"])
    assert len(list(tmp_path.glob("processed-*"))) == 2
    assert not list(tmp_path.glob("processed-*/.*"))  # no temp files left behind


def test_train_shuffle_is_seeded(raw_dir: Path, tmp_path: Path) -> None:
    dm = ready(small_dm(raw_dir, tmp_path), "fit")
    first = torch.cat([b["target"] for b in dm.train_dataloader()])
    second = torch.cat([b["target"] for b in dm.train_dataloader()])
    torch.testing.assert_close(first, second)
    assert not torch.equal(first, dm.datasets["train"].target)


def test_corrupt_wav_names_the_file(tmp_path: Path) -> None:
    raw = make_raw_dir(tmp_path / "raw", takes=1)
    (raw / "fsdd" / "recordings" / "4_alice_7.wav").write_bytes(b"RIFF....WAVEfmt not really")
    dm = small_dm(raw, tmp_path / "cache")
    with pytest.warns(DataDigestWarning), pytest.raises(ValueError, match=r"4_alice_7\.wav"):
        dm.prepare_data()


def test_unknown_speaker_names_config_key(raw_dir: Path, tmp_path: Path) -> None:
    dm = small_dm(raw_dir, tmp_path, test_speaker="yweweler")
    with pytest.warns(DataDigestWarning), pytest.raises(ValueError, match=r"datamodule\.test_speaker.*alice"):
        dm.prepare_data()


def test_pca_residual_removes_leading_components() -> None:
    rng = np.random.default_rng(0)
    # Strong low-rank structure + a little isotropic noise, 16 "pixels".
    train = rng.normal(size=(500, 2)) @ rng.normal(size=(2, 16)) * 5 + rng.normal(size=(500, 16)) * 0.1
    images, meta = _pca_residual({"train": train, "test": train[:10]}, 0.9)
    assert meta["pca_components_removed"] in (1, 2) and meta["variance_removed"] >= 0.9
    _, eigvec = np.linalg.eigh(np.cov(train.T))
    top = eigvec[:, -meta["pca_components_removed"] :]
    residual = images["train"].reshape(500, 16)
    assert np.abs(residual @ top).max() < 1e-4  # nothing left along the removed directions
    assert residual.std() == pytest.approx(1.0, rel=1e-4) and images["train"].shape == (500, 1, 4, 4)
    whole, meta0 = _pca_residual({"train": train}, 0.0)
    assert meta0["pca_components_removed"] == 0
    np.testing.assert_allclose(
        whole["train"].reshape(500, 16), (train - train.mean(0)) / (train - train.mean(0)).std(), rtol=1e-4
    )


def test_missing_data_and_failed_download_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "FSDD_URL", "http://127.0.0.1:9/fsdd.zip")
    monkeypatch.setattr(download, "MNIST_URL", "http://127.0.0.1:9/mnist.npz")
    raw = tmp_path / "nothing_here"
    dm = small_dm(raw, tmp_path / "cache", download=True)
    with pytest.raises(DataUnavailableError) as info:
        dm.prepare_data()
    message = str(info.value)
    for needle in (
        f"{raw}/fsdd/recordings/*.wav",
        f"{raw}/mnist/mnist.npz",
        "http://127.0.0.1:9/fsdd.zip",
        "http://127.0.0.1:9/mnist.npz",
        "datamodule.raw_dir=",
        "MMFW_AVDIGITS_RAW",
        "download failed",
    ):
        assert needle in message
    assert not list(raw.rglob("*.part")) and not (raw / "fsdd" / "recordings").exists()


def test_missing_data_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="download=False"):
        ensure_raw_data(tmp_path / "raw", tmp_path / "cache", download=False)


def test_real_data_digests_verified_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, avdigits_raw: Path) -> None:
    raw = str(avdigits_raw)
    info = ensure_raw_data(raw, tmp_path, download=False)
    assert info.matches_reference and info.fsdd_sha256 == download.FSDD_SHA256
    assert info.mnist_sha256 == download.MNIST_ARRAY_SHA256
    monkeypatch.setattr(download, "fsdd_digest", lambda _: pytest.fail("digest recomputed"))
    assert ensure_raw_data(raw, tmp_path, download=False) == info  # from the marker in the cache


def test_config_matches_constructor() -> None:
    cfg = OmegaConf.load(REPO / "conf" / "datamodule" / "avdigits.yaml")
    assert cfg._target_ == "mmfw.data.avdigits.AVDigitsDataModule"
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "_target_"}
    inspect.signature(AVDigitsDataModule).bind(**kwargs)  # every key is a constructor argument
    defaults = {k: p.default for k, p in inspect.signature(AVDigitsDataModule).parameters.items()}
    for key in ("train_size", "val_size", "test_size", "pca_variance_removed", "snr_db", "test_speaker", "val_speaker"):
        assert cfg[key] == defaults[key], key


@pytest.mark.slow
def test_real_data_build(tmp_path: Path, avdigits_raw: Path) -> None:
    raw = str(avdigits_raw)
    dm = AVDigitsDataModule(raw_dir=raw, cache_dir=str(tmp_path), modalities=["image", "audio"], download=False)
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup()
    assert time.perf_counter() - start < 120
    val_speaker = dm.build_params["val_speaker"]
    assert dm.meta["speakers"] == {
        "train": sorted({"george", "jackson", "lucas", "nicolas", "theo"} - {val_speaker}),
        "val": [val_speaker],
        "test": ["yweweler"],
    }
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [10_000, 2_000, 5_000]
    assert dm.datasets["test"].inputs["audio"].shape == (5000, 1, 40, 64)
    assert dm.meta["image"]["variance_removed"] >= 0.99
    start = time.perf_counter()
    again = AVDigitsDataModule(raw_dir=raw, cache_dir=str(tmp_path), modalities=["image", "audio"], download=False)
    again.prepare_data()
    again.setup()
    assert time.perf_counter() - start < 10


def test_speaker_folds_rotate_the_validation_speaker(raw_dir: Path, tmp_path: Path) -> None:
    first = ready(small_dm(raw_dir, tmp_path, fold=0), "fit")
    assert first.meta["speakers"] == {"train": ["bob"], "val": ["alice"], "test": ["carol"]}
    assert first.fold == {"fold": 0, "folds": 2, "val_speaker": "alice"}
    second, named = ready(small_dm(raw_dir, tmp_path, fold=1)), ready(small_dm(raw_dir, tmp_path))
    assert second.meta["speakers"]["val"] == ["bob"] and named.fold is None
    for split in ("train", "val", "test"):  # fold 1 is val_speaker=bob, the same pairs
        torch.testing.assert_close(second.datasets[split].inputs["audio"], named.datasets[split].inputs["audio"])
    with pytest.raises(ValueError, match=r"datamodule.fold=2: there are 2 validation speakers \['alice', 'bob'\]"):
        ready(small_dm(raw_dir, tmp_path, fold=2))
