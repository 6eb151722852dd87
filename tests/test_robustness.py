"""Robustness evaluation: each corruption measured, curve formulas against hand computation, config errors, and the
sweep on a toy model (obvious degradation), on a manifest with all four modality kinds and on real tiny AV-digits."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import TINY_AVDIGITS, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from PIL import Image
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from mmfw.contracts import MASK_KEY, TARGET_KEY, TaskSpec
from mmfw.data.manifest import ManifestDataModule
from mmfw.evaluate import robustness_options
from mmfw.robustness import (
    AudioSNRNoise,
    CharacterDrop,
    GaussianImageNoise,
    RobustnessConfigError,
    TabularValueDrop,
    auc,
    effective_robustness,
    evaluate_robustness,
    modality_subsets,
    plan_corruptions,
    print_report,
    relative_robustness,
    save_report,
)
from mmfw.robustness.tabular_drop import drop_values
from mmfw.train import CONFIG_DIR, build


# ---------------------------------------------------------------------------------------------- a toy problem
class ToyData:
    """Two classes. ``image`` (1, 4, 4) is ``±1`` everywhere (the class, pixel std 1); ``meta`` has one numeric
    column that agrees with the class 70% of the time, a noise column and a categorical column."""

    modalities = ["image", "meta"]
    modality_kinds = {"image": "image", "meta": "tabular"}

    def __init__(self, n: int = 400, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, n)
        sign = torch.tensor(2.0 * y - 1.0, dtype=torch.float32)
        agree = torch.tensor(np.where(rng.random(n) < 0.7, 1.0, -1.0), dtype=torch.float32)
        self.samples = [
            {
                "image": sign[i] * torch.ones(1, 4, 4),
                "meta": {
                    "numeric": torch.tensor([sign[i] * agree[i], float(rng.normal())]),
                    "numeric_missing": torch.zeros(2, dtype=torch.bool),
                    "categorical": torch.tensor([int(rng.integers(1, 4))]),
                },
                MASK_KEY: torch.ones(2, dtype=torch.bool),
                TARGET_KEY: torch.tensor(int(y[i])),
            }
            for i in range(n)
        ]

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.samples, batch_size=64, shuffle=False)

    val_dataloader = test_dataloader


class ToyModel(nn.Module):
    """``s = 4 · image[0, 0, 0] · m_image + numeric[0] · m_meta``, logits ``(-s, s)``: the image decides if present."""

    task = TaskSpec("multiclass", 2, ["0", "1"])

    def forward(self, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        s = 4 * batch["image"][:, 0, 0, 0] * mask[:, 0] + batch["meta"]["numeric"][:, 0] * mask[:, 1]
        return torch.stack([-s, s], dim=1)


# ---------------------------------------------------------------------------------------------- corruptions
def test_image_noise_has_the_requested_std_and_reuses_its_draws():
    data = ToyData(n=400)
    data.samples[0][MASK_KEY] = torch.tensor([False, True])  # a missing image stays zeros
    data.samples[0]["image"] = torch.zeros(1, 4, 4)
    noise = GaussianImageNoise(levels=[0.5, 2.0])
    clean = torch.cat([b["image"] for b in data.test_dataloader()])
    pixel_std = noise.pixel_std(data, "test", "image")
    assert pixel_std == pytest.approx(float(clean[1:].std(unbiased=False)), rel=1e-6)
    deltas = {}
    for level in noise.levels:
        deltas[level] = torch.cat([b["image"] for b in noise.batches(data, "test", "image", level, seed=3)]) - clean
        assert float(deltas[level][1:].std()) == pytest.approx(level * pixel_std, rel=0.05)
        assert torch.equal(deltas[level][0], torch.zeros(1, 4, 4))
    torch.testing.assert_close(deltas[2.0], 4 * deltas[0.5])  # the same draws, scaled
    absolute = GaussianImageNoise(levels=[0.3], scale="absolute")
    delta = torch.cat([b["image"] for b in absolute.batches(data, "test", "image", 0.3, seed=3)]) - clean
    assert float(delta[1:].std()) == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize("snr_db", [20.0, 5.0, -5.0])
def test_audio_noise_has_the_requested_snr(snr_db):
    t = np.arange(16000) / 8000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    power = float(np.mean(wave.astype(np.float64) ** 2))
    corrupt = AudioSNRNoise.transform(snr_db, seed=0, modality="voice")
    noisy = corrupt(wave, sample_rate=8000, signal_power=power, index=7)
    measured = 10 * np.log10(power / np.mean((noisy.astype(np.float64) - wave) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.2)
    np.testing.assert_array_equal(noisy, corrupt(wave, sample_rate=8000, signal_power=power, index=7))
    assert not np.array_equal(noisy, corrupt(wave, sample_rate=8000, signal_power=power, index=8))


def test_character_drop_rate_and_nesting():
    text = "the quick brown fox jumps over the lazy dog " * 250
    kept = {}
    for share in (0.1, 0.5, 0.9):
        out = CharacterDrop.transform(share, seed=1, modality="caption")(text, index=4)
        assert 1 - len(out) / len(text) == pytest.approx(share, abs=0.02)
        kept[share] = out
    assert CharacterDrop.transform(1.0, seed=1, modality="caption")(text, index=4) == ""
    assert CharacterDrop.transform(0.5, seed=1, modality="caption")(text, index=4) == kept[0.5]  # seeded
    # common random numbers: a higher share drops a superset, so what is kept is a subsequence
    it = iter(kept[0.1])
    assert all(c in it for c in kept[0.5])


def test_tabular_value_drop_rate_encoding_and_whole_row():
    n = 2000
    table = {
        "numeric": torch.randn(n, 3),
        "numeric_missing": torch.zeros(n, 3, dtype=torch.bool),
        "categorical": torch.randint(1, 5, (n, 2)),
    }
    present = torch.ones(n, dtype=torch.bool)
    present[:10] = False
    for key in table:
        table[key][:10] = 0
    out, new_present = drop_values(table, present, 0.3, torch.Generator().manual_seed(0))
    dropped = torch.cat([out["numeric_missing"][10:], out["categorical"][10:] == 0], dim=1)
    assert float(dropped.float().mean()) == pytest.approx(0.3, abs=0.02)
    assert torch.all(out["numeric"][out["numeric_missing"]] == 0)
    assert not out["numeric_missing"][:10].any() and not new_present[:10].any()  # missing rows untouched
    whole, gone = drop_values(table, present, 1.0, torch.Generator().manual_seed(0))
    assert not gone.any() and all(not v.any() for v in whole.values())


def test_levels_must_go_from_mild_to_severe():
    with pytest.raises(ValueError, match="GaussianImageNoise.levels must increase"):
        GaussianImageNoise(levels=[1.0, 0.5])
    with pytest.raises(ValueError, match=r"GaussianImageNoise.levels must lie in \(0.0"):
        GaussianImageNoise(levels=[0.0, 1.0])
    with pytest.raises(ValueError, match="AudioSNRNoise.snr_db must decrease"):
        AudioSNRNoise(snr_db=[0, 10])
    with pytest.raises(ValueError, match="CharacterDrop.levels must lie in"):
        CharacterDrop(levels=[0.5, 1.5])


# ---------------------------------------------------------------------------------------------- formulas
def test_curve_summaries_by_hand():
    assert auc([1.0, 0.8, 0.5], [0.0, 0.5, 1.5]) == pytest.approx(0.5 * 1.8 / 2 + 1.0 * 1.3 / 2)
    assert auc([0.6, 0.8], [10.0, -5.0]) == pytest.approx(15 * 0.7)  # widths are |Δlevel| (SNR sweeps go down)
    assert relative_robustness([1.0, 0.8, 0.5]) == pytest.approx((1.8 / 2 + 1.3 / 2) * 0.5)
    eleven = list(np.linspace(0.9, 0.4, 11))
    multibench = sum((eleven[i] + eleven[i + 1]) * 0.1 / 2 for i in range(10))  # eval_scripts/robustness.py
    assert relative_robustness(eleven) == pytest.approx(multibench)
    # f = [.9, .8, .6], late-fusion baseline b = [.8, .6, .5] shifted up by .1 -> [.9, .7, .6]
    assert effective_robustness([0.9, 0.8, 0.6], [0.8, 0.6, 0.5]) == pytest.approx(0.1)


def test_modality_subsets():
    assert modality_subsets(["a", "b", "c"]) == [
        ("a", "b", "c"), ("a", "b"), ("a", "c"), ("b", "c"), ("a",), ("b",), ("c",)
    ]  # fmt: skip
    assert modality_subsets(["x"]) == [("x",)]


# ---------------------------------------------------------------------------------------------- config errors
KINDS = {"photo": "image", "voice": "audio"}


def test_plan_by_kind_and_by_name():
    image, special = GaussianImageNoise(levels=[1.0]), GaussianImageNoise(levels=[2.0])
    plan, notes = plan_corruptions({"image": image, "text": CharacterDrop(levels=[0.5]), "audio": None}, KINDS)
    assert plan == [("photo", image)]
    assert notes == ["robustness.corruptions.text: the run has no text modality, skipped"]
    plan, _ = plan_corruptions({"image": image, "photo": special}, KINDS)
    assert plan == [("photo", special)]  # a modality name wins over its kind


@pytest.mark.parametrize(
    "corruptions,message",
    [
        ({"video": GaussianImageNoise(levels=[1.0])}, r"robustness.corruptions.video: 'video' is neither a modality"),
        ({"caption": CharacterDrop(levels=[0.5])}, r"robustness.corruptions.caption: 'caption' is neither"),
        ({"photo": AudioSNRNoise(snr_db=[0])}, r"robustness.corruptions.photo: AudioSNRNoise corrupts audio data"),
        ({"image": TabularValueDrop(levels=[1.0])}, r"robustness.corruptions.image: TabularValueDrop corrupts tabular"),
    ],
)
def test_bad_corruption_keys_name_the_config_key(corruptions, message):
    with pytest.raises(RobustnessConfigError, match=message):
        plan_corruptions(corruptions, KINDS)


def test_unknown_corruption_kind_names_the_key():
    class Smell:
        kind = "smell"

    with pytest.raises(RobustnessConfigError, match=r"robustness.corruptions.photo: Smell has kind 'smell'"):
        plan_corruptions({"photo": Smell()}, KINDS)


def test_unknown_metric_names_the_key():
    with pytest.raises(RobustnessConfigError, match=r"robustness.metric='f1'.*\['acc', 'f1_macro'\]"):
        evaluate_robustness(ToyModel(), ToyData(n=8), corruptions={}, metric="f1")


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONFIG_DIR) / "robustness").glob("*.yaml")))
def test_robustness_configs_instantiate(name):
    options = robustness_options(compose_eval(["run=some/run", f"robustness={name}"]).robustness)
    assert {type(c).__name__ for c in options["corruptions"].values()} == {
        "GaussianImageNoise", "AudioSNRNoise", "CharacterDrop", "TabularValueDrop"
    }  # fmt: skip
    inspect.signature(evaluate_robustness).bind(ToyModel(), ToyData(n=1), **options)
    assert compose_eval(["run=some/run"]).get("robustness") is None  # off unless asked for


def test_bad_corruption_config_names_the_key():
    cfg = compose_eval(["run=x", "robustness=quick", "robustness.corruptions.image.levels=[2,1]"])
    with pytest.raises(RobustnessConfigError, match=r"(?s)robustness.corruptions.image: .*levels must increase"):
        robustness_options(cfg.robustness)


def compose_eval(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("eval", overrides=overrides)


# ---------------------------------------------------------------------------------------------- sweeps
def toy_report(**kwargs) -> dict:
    corruptions = {"image": GaussianImageNoise(levels=[0.25, 0.5, 1.0, 2.0]), "tabular": TabularValueDrop(levels=[1.0])}
    return evaluate_robustness(ToyModel(), ToyData(), corruptions=corruptions, seed=0, **kwargs)


def test_toy_model_degrades_with_image_noise_and_falls_back_to_metadata(tmp_path):
    report = toy_report()
    assert report["metric"] == "acc" and report["higher_is_better"] and report["clean"]["acc"] == 1.0
    image, table = report["curves"]
    assert (image["modality"], table["modality"]) == ("image", "meta")
    values = image["values"]
    assert values[0] == 1.0 and all(b <= a for a, b in zip(values, values[1:], strict=False)) and values[-1] < 0.85
    assert image["levels"] == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert image["relative_robustness"] == pytest.approx(relative_robustness(values))
    assert image["auc"] == pytest.approx(auc(values, image["levels"]))
    assert table["values"] == [1.0, 1.0]  # the image decides: dropping the metadata changes nothing
    subsets = {tuple(s["present"]): s["value"] for s in report["missing_modalities"]}
    assert subsets[("image", "meta")] == 1.0 and subsets[("image",)] == 1.0
    assert subsets[("meta",)] == pytest.approx(0.7, abs=0.06)  # metadata alone agrees with the label 70% of the time
    assert toy_report()["curves"] == report["curves"]  # seeded: the same numbers again

    json_path, png_path = save_report(report, tmp_path / "robustness")
    assert json.loads(json_path.read_text())["curves"][0]["values"] == values
    with Image.open(png_path) as png:
        assert png.format == "PNG" and png.size[0] > 400
    console = Console(record=True, width=140)
    print_report(report, title="toy", console=console)
    text = console.export_text()
    assert "gaussian_noise" in text and "image+meta" in text


def test_effective_robustness_against_a_baseline_run(tmp_path):
    baseline = toy_report()
    save_report(baseline, tmp_path / "base" / "robustness")
    report = toy_report(baseline=tmp_path / "base", missing_subsets=False)
    assert [c["effective_robustness"] for c in report["curves"]] == [0.0, 0.0]  # a run against itself
    assert report["missing_modalities"] == []
    with pytest.raises(RobustnessConfigError, match="robustness.baseline="):
        toy_report(baseline=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- manifest
TINY_MANIFEST = dict(image_size=12, sample_rate=8000, n_mels=16, n_fft=128, hop_length=64, num_frames=20,
                     max_text_len=24, text_tokenizer="bytes", batch_size=8, seed=0)  # fmt: skip
COLUMNS = {
    "photo": {"kind": "image", "column": "img"},
    "voice": {"kind": "audio", "column": "wav"},
    "caption": {"kind": "text", "column": "caption"},
    "meta": {"kind": "tabular", "numeric": ["age"], "categorical": ["color"]},
}


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory) -> Path:
    """12 rows of real PNG/WAV files with a caption and two table columns; 4 test rows (one caption empty)."""
    root = tmp_path_factory.mktemp("manifest")
    (root / "media").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "media" / f"{i}.png")
        t = np.arange(2000) / 8000
        sf.write(root / "media" / f"{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t), 8000)
        rows.append({"img": f"media/{i}.png", "wav": f"media/{i}.wav", "caption": "" if i == 11 else f"number {i}",
                     "age": 20 + i, "color": "red" if i % 2 else "blue", "label": "ab"[i % 2],
                     "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 4})  # fmt: skip
        rows[-1]["split"] = rows[-1]["split"][i]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_manifest_redecodes_audio_and_text_through_the_corruption(manifest_path):
    dm = ManifestDataModule(manifest=str(manifest_path), modalities=list(COLUMNS), columns=COLUMNS, target="label",
                            **TINY_MANIFEST)  # fmt: skip
    dm.setup("test")
    assert dm.modality_kinds == {"photo": "image", "voice": "audio", "caption": "text", "meta": "tabular"}
    clean = next(iter(dm.test_dataloader()))
    same = next(iter(dm.corrupted_dataloader("test", "voice", lambda wave, **_: wave)))
    torch.testing.assert_close(same["voice"], clean["voice"])
    same = next(iter(dm.corrupted_dataloader("test", "caption", lambda text, **_: text)))
    assert torch.equal(same["caption"], clean["caption"]) and torch.equal(same[MASK_KEY], clean[MASK_KEY])
    assert not clean[MASK_KEY][-1, 2]  # the empty caption is missing
    noisy = next(iter(dm.corrupted_dataloader("test", "voice", AudioSNRNoise.transform(-5.0, 0, "voice"))))
    assert (noisy["voice"] - clean["voice"]).abs().mean() > 0.5
    gone = next(iter(dm.corrupted_dataloader("test", "caption", CharacterDrop.transform(1.0, 0, "caption"))))
    assert not gone[MASK_KEY][:, 2].any() and torch.all(gone["caption"] == dm.codecs["text"].tokenizer.pad_id)
    with pytest.raises(ValueError, match="only audio and text"):
        dm.corrupted_dataloader("test", "photo", lambda x, **_: x)


def test_sweep_over_all_four_kinds_on_a_manifest(manifest_path, tmp_path):
    overrides = [
        "datamodule=manifest", f"datamodule.manifest={manifest_path}", "datamodule.target=label",
        "modalities=[photo,voice,caption,meta]", "+encoder/image@encoder.photo=lenet",
        "+encoder/audio@encoder.voice=cnn", "+encoder/text@encoder.caption=transformer",
        "+encoder/tabular@encoder.meta=mlp", "encoder.caption.d_model=16",
        "datamodule.cache_dir=null", *(f"datamodule.{k}={v}" for k, v in TINY_MANIFEST.items()),
    ]  # fmt: skip
    cfg = compose_train(overrides, tmp_path)
    with open_dict(cfg):
        cfg.datamodule.columns = COLUMNS
    datamodule, model = build(cfg, stage="test")  # randomly initialised: the sweep's mechanics, not its numbers
    corruptions = {
        "image": GaussianImageNoise(levels=[1.0]), "audio": AudioSNRNoise(snr_db=[0.0]),
        "text": CharacterDrop(levels=[0.5]), "tabular": TabularValueDrop(levels=[1.0]),
    }  # fmt: skip
    report = evaluate_robustness(model, datamodule, corruptions=corruptions)
    assert [(c["modality"], c["corruption"]) for c in report["curves"]] == [
        ("photo", "gaussian_noise"), ("voice", "snr_noise"), ("caption", "character_drop"), ("meta", "value_drop")
    ]  # fmt: skip
    assert len(report["missing_modalities"]) == 15 and report["notes"] == []
    _, png = save_report(report, tmp_path / "out")
    with Image.open(png) as image:
        image.verify()


# ---------------------------------------------------------------------------------------------- AV-digits
def test_avdigits_redecodes_the_cached_audio_exactly(tmp_path, avdigits_raw):
    cfg = compose_train([*TINY_AVDIGITS], tmp_path)
    datamodule, model = build(cfg, stage="test")
    clean = datamodule.datasets["test"].inputs["audio"]
    same = torch.cat([b["audio"] for b in datamodule.corrupted_dataloader("test", "audio", lambda w, **_: w)])
    assert torch.equal(same, clean)  # the waveform path rebuilds the cached spectrograms bit for bit
    report = evaluate_robustness(model, datamodule, corruptions={"audio": AudioSNRNoise(snr_db=[10.0, -10.0])})
    assert report["curves"][0]["levels"] == [None, 10.0, -10.0] and report["curves"][0]["auc"] is not None
    assert [s["present"] for s in report["missing_modalities"]] == [["image", "audio"], ["image"], ["audio"]]


@pytest.mark.slow
def test_cli_eval_with_robustness(tmp_path, avdigits_raw):
    """mmfw-train a tiny run, then `mmfw-eval run=... robustness=quick` writes the report; a bad key fails early."""
    bin_dir = Path(sys.executable).parent
    env = {**__import__("os").environ, "MMFW_ROOT": str(tmp_path)}
    subprocess.run([str(bin_dir / "mmfw-train"), *TINY_AVDIGITS, "trainer.max_epochs=1", "logger=csv"], check=True,
                   env=env, capture_output=True, timeout=300)  # fmt: skip
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    out = subprocess.run([str(bin_dir / "mmfw-eval"), f"run={run}", "robustness=quick"], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((run / "robustness" / "robustness.json").read_text())
    assert [c["modality"] for c in report["curves"]] == ["image", "audio"] and "under corruption" in out.stdout
    assert OmegaConf.create(report).clean.acc == pytest.approx(json.loads((run / "eval_metrics.json").read_text())
                                                               ["metrics"]["test/acc"], abs=1e-6)  # fmt: skip
    bad = subprocess.run([str(bin_dir / "mmfw-eval"), f"run={run}", "robustness=quick",
                          "+robustness.corruptions.video={_target_:mmfw.robustness.GaussianImageNoise,levels:[1]}"],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode != 0 and "robustness.corruptions.video" in bad.stderr
