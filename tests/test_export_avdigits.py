"""The AV-digits export tool writes real files + a manifest that the manifest experiments train on."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from conftest import compose_train
from PIL import Image

from mmfw.data.avdigits import AVDigitsDataModule
from mmfw.tools.export_avdigits import image_to_uint8, main, noisy_transcript
from mmfw.train import build

SIZES = ["--train", "40", "--val", "20", "--test", "20"]  # the TINY_AVDIGITS construction: cached once for all tests


@pytest.fixture(scope="module")
def exported(tmp_path_factory, avdigits_raw):
    out = tmp_path_factory.mktemp("export")
    main(["--out", str(out), *SIZES, "--raw-dir", str(avdigits_raw)])
    return out


def test_manifest_rows_and_files(exported, avdigits_raw):
    frame = pd.read_csv(exported / "manifest.csv")
    assert list(frame.columns) == ["image", "audio", "digit", "parity", "speaker", "duration_s", "transcript", "split"]
    assert frame["split"].value_counts().to_dict() == {"train": 40, "val": 20, "test": 20}
    assert set(frame.loc[frame.split == "test", "speaker"]) == {"yweweler"}  # AV-digits' held-out test speaker
    assert (frame["parity"] == np.where(frame["digit"] % 2 == 0, "even", "odd")).all()
    cache = os.path.join(os.environ["MMFW_CACHE_DIR"], "avdigits")
    dm = AVDigitsDataModule(raw_dir=str(avdigits_raw), cache_dir=cache, modalities=["image", "audio"], train_size=40,
                            val_size=20, test_size=20)  # fmt: skip
    dm.prepare_data()
    dm.setup("test")
    test = frame[frame.split == "test"].reset_index(drop=True)
    assert (test["digit"].to_numpy() == dm.datasets["test"].target.numpy()).all()
    waves, _ = dm.pair_waves("test")
    wave, rate = sf.read(exported / test.loc[3, "audio"], dtype="float32")
    assert rate == 8000 and np.abs(wave - np.clip(waves[3], -1, 1)).max() < 1 / 2**14  # 16-bit PCM
    with Image.open(exported / test.loc[3, "image"]) as png:
        assert png.mode == "L" and png.size == (28, 28)
        assert np.array_equal(np.asarray(png), image_to_uint8(dm.datasets["test"].inputs["image"][3, 0].numpy()))


def test_transcripts_are_noisy_but_mostly_right():
    rng = np.random.default_rng(0)
    words = [noisy_transcript(d % 10, rng, error=0.3, typo_rate=0.0) for d in range(2000)]
    right = np.mean([w == ("zero one two three four five six seven eight nine".split())[d % 10]
                     for d, w in enumerate(words)])  # fmt: skip
    assert right == pytest.approx(0.7, abs=0.03)


def test_refuses_to_overwrite(exported):
    with pytest.raises(SystemExit):
        main(["--out", str(exported), *SIZES])


@pytest.mark.parametrize("name", ["manifest_digits", "manifest_parity", "manifest_regression"])
def test_manifest_experiments_train_on_the_export(name, exported, tmp_path):
    overrides = [f"experiment={name}", f"datamodule.manifest={exported / 'manifest.csv'}", "datamodule.batch_size=8"]
    cfg = compose_train(overrides, tmp_path)
    datamodule, model = build(cfg)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=tmp_path, log_every_n_steps=1)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    kinds = {"manifest_digits": "multiclass", "manifest_parity": "binary", "manifest_regression": "regression"}
    assert datamodule.task.kind == kinds[name]
