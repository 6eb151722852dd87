"""mmfw-baseline: a linear model on exactly a run's splits, on real files (CSV + PNG + WAV) and on tiny AV-digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import TINY_AVDIGITS, compose_train
from omegaconf import OmegaConf
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from mmfw.baseline import run_baseline
from mmfw.runs import run_folder
from mmfw.runs.run_folder import NotARunFolderError
from mmfw.train import train

WORDS = ["red", "green", "blue"]  # the label's word in the caption
SPLIT_OF = ["train"] * 6 + ["val"] * 2 + ["test"] * 2  # repeated: 60% / 20% / 20%


def write_dataset(root: Path, n: int = 60) -> Path:
    """A manifest whose caption names the class among filler words; image brightness, tone pitch and a numeric
    column carry the class too, with noise. Fixed split column."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = i % 3
        shade = np.clip(60 + 60 * label + rng.normal(0, 25, size=(12, 12)), 0, 255).astype(np.uint8)
        Image.fromarray(shade).save(root / f"img{i}.png")
        t = np.arange(2000) / 8000
        sf.write(root / f"rec{i}.wav", 0.3 * np.sin(2 * np.pi * (300 + 600 * label) * t), 8000, subtype="PCM_16")
        filler = " ".join(rng.choice(["a", "photo", "of", "the", "thing", "seen"], size=rng.integers(2, 6)))
        rows.append({
            "img": f"img{i}.png", "wav": f"rec{i}.wav", "caption": f"{filler} {WORDS[label]} {filler}",
            "size": f"{label + rng.normal(0, 0.8):.3f}", "shop": ["x", "y"][i % 2],
            "label": ["cat", "dog", "bird"][label], "split": SPLIT_OF[(i // 3) % len(SPLIT_OF)],
            "score": f"{label * 1.5 + rng.normal(0, 0.1):.3f}", "tags": "|".join(["a"] + (["b"] if label else [])),
            "even": str(label % 2),
        })  # fmt: skip
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


COLUMNS = {
    "image": "{kind:image,column:img}",
    "audio": "{kind:audio,column:wav}",
    "text": "{kind:text,column:caption}",
    "meta": "{kind:tabular,numeric:[size],categorical:[shop]}",
}


def manifest_overrides(manifest: Path, modalities: list[str], target: str = "label", task: str = "multiclass") -> list:
    return [
        "datamodule=manifest",
        f"datamodule.manifest={manifest}",
        f"datamodule.target={target}",
        f"datamodule.task={task}",
        *[f"+datamodule.columns.{m}={spec}" for m, spec in COLUMNS.items()],
        "datamodule.image_mode=L",
        "datamodule.image_size=12",
        "datamodule.sample_rate=8000",
        "datamodule.n_mels=16",
        "datamodule.n_fft=128",
        "datamodule.hop_length=64",
        "datamodule.num_frames=20",
        "datamodule.max_text_len=32",
        "datamodule.text_tokenizer=bytes",
        f"modalities=[{','.join(modalities)}]",
        "+encoder/text@encoder.text=transformer",
        "encoder.text.d_model=16",
        "encoder.text.n_layers=1",
        "+encoder/tabular@encoder.meta=mlp",
        "logger=csv",
    ]


def save_run_config(cfg, run_dir: Path) -> Path:
    """A run folder as Hydra leaves it before the job starts (config + run.json), for runs the test does not train."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    run_folder.update_run_json(run_dir, status="completed")
    return run_dir


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, manifest) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train([*manifest_overrides(manifest, list(COLUMNS)), "trainer.max_epochs=1"], run_dir)
    save_run_config(cfg, run_dir)
    train(cfg)
    return run_dir


def test_baseline_on_a_trained_manifest_run(trained_run, manifest):
    record = run_baseline(trained_run)
    models = record["models"]
    assert set(models) == {"image", "audio", "text", "meta", "all"}
    assert record["split_sizes"] == {"train": 36, "val": 12, "test": 12}
    assert record["features"]["text"]["description"].startswith("tf-idf word 1-2 + char 2-5 grams of the raw text")
    assert models["audio"]["features"] == 2 * 16  # mean + std of 16 mel bands
    assert models["image"]["features"] == 12 * 12
    # The model's test metrics and the baselines' side by side, in test_metrics.json and run.json.
    merged = json.loads((trained_run / "test_metrics.json").read_text())
    assert {"test/acc", "baseline/test/acc", "baseline/test/f1_macro", "baseline[text]/test/acc"} <= set(merged)
    assert run_folder.read_run_json(trained_run)["test_metrics"] == merged
    assert json.loads((trained_run / "baseline" / "metrics.json").read_text())["test_metrics"] == {
        k: v for k, v in merged.items() if k.startswith("baseline")
    }
    assert merged["baseline[text]/test/acc"] == 1.0  # the caption names the class
    # C was chosen on val by the run's monitor (val/acc, max).
    for result in models.values():
        assert result["val"]["val/acc"] == max(result["val_by_C"].values())


def test_text_baseline_is_fitted_on_exactly_the_runs_train_split(trained_run, manifest):
    """The same TF-IDF + logistic regression fitted independently on the manifest's train rows gives the same
    probabilities: the baseline sees the raw text (not cut token ids) of exactly the run's train split."""
    record = run_baseline(trained_run)
    frame = pd.read_csv(manifest)
    train, test = frame[frame.split == "train"], frame[frame.split == "test"]
    common = dict(sublinear_tf=True, min_df=1, max_features=200_000, dtype=np.float32)
    vectorizer = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **common)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common)),
    ])  # fmt: skip
    features = vectorizer.fit_transform(train.caption)
    c = record["models"]["text"]["C"]
    model = LogisticRegression(C=c, max_iter=3000).fit(features, train.label.map({"cat": 0, "dog": 1, "bird": 2}))
    predicted = model.predict(vectorizer.transform(test.caption))
    expected_acc = float(np.mean(predicted == test.label.map({"cat": 0, "dog": 1, "bird": 2}).to_numpy()))
    assert record["models"]["text"]["test"]["test/acc"] == pytest.approx(expected_acc)


def test_rerun_replaces_the_baseline_entries(trained_run):
    path = trained_run / "test_metrics.json"
    stale = json.loads(path.read_text()) | {"baseline[gone]/test/acc": 0.5}
    path.write_text(json.dumps(stale))
    run_baseline(trained_run, grid=[1.0])
    merged = json.loads(path.read_text())
    assert "baseline[gone]/test/acc" not in merged and "test/acc" in merged
    assert run_folder.read_run_json(trained_run)["baseline"]["C"]["all"] == 1.0


@pytest.mark.parametrize(
    ("target", "task", "monitor", "expected"),
    [
        ("even", "binary", "val/auroc", {"acc", "f1", "auroc", "loss"}),
        ("tags", "multilabel", "val/f1_macro", {"acc", "f1_macro", "loss"}),
        ("score", "regression", "val/mse", {"mse", "mae", "loss"}),
    ],
)
def test_task_kinds(tmp_path, manifest, target, task, monitor, expected):
    overrides = manifest_overrides(manifest, ["text", "meta"], target=target, task=task)
    mode = "min" if monitor == "val/mse" else "max"
    cfg = compose_train([*overrides, f"monitor.metric={monitor}", f"monitor.mode={mode}"], tmp_path)
    record = run_baseline(save_run_config(cfg, tmp_path))
    assert set(record["models"]) == {"text", "meta", "all"}
    assert {k.split("/")[-1] for k in record["models"]["all"]["test"]} == expected
    best = (max if mode == "max" else min)(record["models"]["all"]["val_by_C"].values())
    assert record["models"]["all"]["val"][monitor] == best
    if task == "regression":  # score = 1.5 * class + noise, and the caption names the class
        assert record["models"]["text"]["test"]["test/mse"] < 0.2 * np.var([0.0, 1.5, 3.0])


def test_baseline_on_tiny_avdigits(tmp_path, avdigits_raw):
    cfg = compose_train(TINY_AVDIGITS, tmp_path)
    record = run_baseline(save_run_config(cfg, tmp_path))
    assert record["split_sizes"] == {"train": 40, "val": 20, "test": 20}
    assert set(record["models"]) == {"image", "audio", "all"}
    assert record["models"]["image"]["features"] == 16 * 16  # 28x28 pooled to 16x16
    assert record["models"]["audio"]["features"] == 2 * 40
    assert record["models"]["all"]["features"] == 16 * 16 + 2 * 40 + 2  # + the two mask bits
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert {"baseline/test/acc", "baseline[image]/test/acc", "baseline[audio]/test/acc"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k.endswith("acc"))


def test_cli_prints_the_comparison(trained_run):
    result = subprocess.run(
        [sys.executable, "-m", "mmfw.baseline", f"run={trained_run}", "grid=[0.1,1.0]"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline[text]" in result.stdout and "test/acc" in result.stdout and "model" in result.stdout


def test_not_a_run_folder(tmp_path):
    with pytest.raises(NotARunFolderError, match="not an mmfw run folder"):
        run_baseline(tmp_path)
