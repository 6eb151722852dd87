"""Frozen-feature cache (mmfw.feature_cache): hit, miss, invalidation, equality with the uncached run, masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from cli_helpers import mmfw, output
from conftest import compose_train

from mmfw.contracts import FEATURES_KEY, MASK_KEY
from mmfw.feature_cache import FeatureCacheDataModule, is_frozen
from mmfw.robustness.sweep import score
from mmfw.train import build, train

WORDS = ["red", "green", "blue"]


def write_manifest(root: Path, n: int = 45, *, bad_row: bool = False) -> Path:
    """Text + table; the caption names the class; a fixed split column; some captions missing."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = i % 3
        filler = " ".join(rng.choice(["a", "photo", "of", "the", "thing"], size=rng.integers(2, 6)))
        rows.append({
            "caption": "" if i % 7 == 3 else f"{filler} {WORDS[label]} {filler}",
            "size": f"{label + rng.normal(0, 0.8):.3f}", "shop": ["x", "y"][i % 2],
            "label": ["cat", "dog", "bird"][label], "split": ["train", "train", "train", "val", "test"][(i // 3) % 5],
        })  # fmt: skip
    if bad_row:
        rows[4]["label"] = ""  # a missing target: skipped with on_bad_sample=skip
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def overrides(manifest: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "datamodule=manifest",
        f"datamodule.manifest={manifest}",
        "datamodule.target=label",
        "+datamodule.columns.text={kind:text,column:caption}",
        "+datamodule.columns.meta={kind:tabular,numeric:[size],categorical:[shop]}",
        "datamodule.text_tokenizer=bytes",  # the Transformer reads byte ids (the manifest default is ngrams)
        "datamodule.max_text_len=32",
        "datamodule.batch_size=8",
        "modalities=[text,meta]",
        "+encoder/text@encoder.text=transformer",
        "encoder.text.d_model=16",
        "encoder.text.n_layers=1",
        "encoder.text.frozen=true",  # dropout 0.1: equality needs the frozen encoder kept in eval mode
        "+encoder/tabular@encoder.meta=mlp",
        "logger=csv",
        "monitor.metric=val/loss",
        f"paths.cache_dir={cache}",
        *extra,
    ]


def lookups(tmp_path: Path, manifest: Path, cache: Path, *extra: str, splits=("train", "val", "test")):
    """Build the run and request its loaders, as trainer.fit/test do; returns (datamodule, model, lookups)."""
    cfg = compose_train(overrides(manifest, cache, *extra), tmp_path)
    pl.seed_everything(cfg.seed)  # as mmfw-train does: the frozen encoder's random weights follow the seed
    datamodule, model = build(cfg)
    assert isinstance(datamodule, FeatureCacheDataModule)
    datamodule.setup("test")
    loaders = {split: getattr(datamodule, f"{split}_dataloader")() for split in splits}
    return datamodule, model, loaders, {(r["split"], r["modality"]): r for r in datamodule.lookups}


def test_only_frozen_encoders_are_cached_and_the_features_are_the_encoders_outputs(tmp_path):
    manifest = write_manifest(tmp_path / "data")
    datamodule, model, loaders, found = lookups(tmp_path / "run", manifest, tmp_path / "cache")
    assert is_frozen(model.encoders["text"]) and not is_frozen(model.encoders["meta"])
    assert datamodule.describe()["modalities"] == ["text"]
    assert set(found) == {("train", "text"), ("val", "text"), ("test", "text")}
    assert not any(r["hit"] for r in found.values())
    model.train()  # the frozen encoder stays in eval mode (its dropout is off)
    assert model.encoders["text"].training is False and model.encoders["meta"].training is True
    for loader in loaders.values():
        for batch in loader:
            with torch.no_grad():
                expected = model.encoders["text"](batch["text"])
            torch.testing.assert_close(batch[FEATURES_KEY]["text"], expected, rtol=1e-5, atol=1e-6)
            assert set(batch[FEATURES_KEY]) == {"text"}


def test_hit_on_rebuild_and_invalidation(tmp_path):
    manifest = write_manifest(tmp_path / "data")
    cache = tmp_path / "cache"
    _, _, _, first = lookups(tmp_path / "r1", manifest, cache)
    _, model, _, again = lookups(tmp_path / "r2", manifest, cache)
    assert all(r["hit"] for r in again.values())
    assert {k: r["key"] for k, r in again.items()} == {k: r["key"] for k, r in first.items()}

    # Changed preprocessing: a shorter max_text_len changes the ids the encoder sees.
    _, _, _, shorter = lookups(tmp_path / "r3", manifest, cache, "datamodule.max_text_len=24")
    assert not any(r["hit"] for r in shorter.values())
    # Changed encoder config that no weight shows (pooling).
    _, _, _, pooled = lookups(tmp_path / "r4", manifest, cache, "encoder.text.pooling=cls")
    assert not any(r["hit"] for r in pooled.values())
    # Changed weights: another seed initialises the frozen encoder differently.
    _, _, _, reseeded = lookups(tmp_path / "r5", manifest, cache, "seed=7")
    assert not any(r["hit"] for r in reseeded.values())

    # Changed weights in place (as a loaded checkpoint would): the next loader request recomputes.
    datamodule, model, _, _ = lookups(tmp_path / "r6", manifest, cache)
    with torch.no_grad():
        model.encoders["text"].norm.bias.add_(1.0)
    datamodule.val_dataloader()
    assert datamodule.lookups[-1]["hit"] is False

    # Changed data: one caption of the test split edited; train and val keep their features.
    frame = pd.read_csv(manifest, keep_default_na=False)
    frame.loc[frame.index[frame["split"] == "test"][0], "caption"] = "an edited caption"
    frame.to_csv(manifest, index=False)
    _, _, _, edited = lookups(tmp_path / "r7", manifest, cache)
    assert edited[("train", "text")]["hit"] and edited[("val", "text")]["hit"]
    assert not edited[("test", "text")]["hit"]


def test_skipped_rows_key_on_the_rows_kept(tmp_path):
    manifest = write_manifest(tmp_path / "data", bad_row=True)
    datamodule, model, loaders, found = lookups(
        tmp_path / "run", manifest, tmp_path / "cache", "datamodule.on_bad_sample=skip"
    )
    assert [s["row"] for s in datamodule.skipped] == [5]
    batch = next(iter(loaders["train"]))
    with torch.no_grad():
        torch.testing.assert_close(batch[FEATURES_KEY]["text"], model.encoders["text"](batch["text"]))


def test_masks_and_modality_dropout_still_apply(tmp_path):
    manifest = write_manifest(tmp_path / "data")
    datamodule, model, loaders, _ = lookups(
        tmp_path / "run", manifest, tmp_path / "cache", "model.modality_dropout=0.5", splits=("train",)
    )
    batch = next(iter(loaders["train"]))
    raw = {k: v for k, v in batch.items() if k != FEATURES_KEY}
    model.eval()
    with torch.no_grad():
        for mask in (batch[MASK_KEY], torch.tensor([[False, True]]).expand_as(batch[MASK_KEY])):
            torch.testing.assert_close(model(batch, mask), model(raw, mask), rtol=1e-5, atol=1e-6)
        text_off = torch.tensor([[False, True]]).expand_as(batch[MASK_KEY])
        assert not torch.allclose(model(batch), model(batch, text_off))  # the mask reaches the fusion
    model.train()
    losses = []
    for inputs in (batch, raw):
        torch.manual_seed(0)  # the same modality-dropout draws
        model.train_metrics.reset()
        with torch.no_grad():
            losses.append(model._loss_and_outputs(inputs, model._dropout_mask(inputs[MASK_KEY]))[0])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_robustness_scoring_ignores_cached_features(tmp_path):
    manifest = write_manifest(tmp_path / "data")
    datamodule, model, loaders, _ = lookups(tmp_path / "run", manifest, tmp_path / "cache", splits=("test",))
    batches = list(loaders["test"])
    stale = [{**b, FEATURES_KEY: {"text": torch.randn_like(b[FEATURES_KEY]["text"])}} for b in batches]
    metrics = model.task.metrics("")
    model.eval()
    assert score(model, stale, metrics, torch.device("cpu")) == score(model, batches, metrics, torch.device("cpu"))


def test_cached_run_has_the_metrics_of_the_uncached_run(tmp_path):
    manifest = write_manifest(tmp_path / "data")
    results = {}
    for cached in (True, False):
        run_dir = tmp_path / f"run-{cached}"
        cfg = compose_train(
            overrides(manifest, tmp_path / "cache", "trainer.max_epochs=2", f"feature_cache={cached}",
                      "model.modality_dropout=0.3"),
            run_dir,
        )  # fmt: skip
        train(cfg)
        results[cached] = (
            json.loads((run_dir / "test_metrics.json").read_text()),
            json.loads((run_dir / "run.json").read_text()),
        )
    (with_cache, record), (without, plain) = results[True], results[False]
    assert with_cache.keys() == without.keys() and with_cache
    for name, value in without.items():
        assert with_cache[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert record["feature_cache"]["modalities"] == ["text"]
    assert {(r["split"], r["modality"]) for r in record["feature_cache"]["lookups"]} >= {("train", "text")}
    assert "feature_cache" not in plain


@pytest.mark.slow
def test_ddp_ranks_compute_each_split_once(tmp_path):
    """Two gloo ranks: one computes each split's features under the lock, the other reads the file it wrote."""
    manifest = write_manifest(tmp_path / "data")
    cache = tmp_path / "cache"
    args = overrides(manifest, cache)
    result = mmfw(
        "mmfw-train", "trainer=ddp_cpu", "trainer.max_epochs=1", *args,
        root=tmp_path, timeout=300,
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == 0, output(result)
    for split in ("train", "val", "test"):
        assert text.count(f"miss (computed) for {split}/text") == 1, output(result)
        assert text.count(f"hit for {split}/text") == 1, output(result)
    files = sorted(p.name for p in (cache / "features").iterdir())
    assert len([f for f in files if f.endswith(".pt")]) == 3 and not [f for f in files if f.endswith(".tmp")]
