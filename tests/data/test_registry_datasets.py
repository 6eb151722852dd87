"""Real data sets fetched from package registries by exact version and sha256 (mmfw.data.registry_datasets)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REQUIRE_DATA_ENV, compose_train
from omegaconf import OmegaConf

from mmfw.data import registry_datasets as reg
from mmfw.data.download import DataUnavailableError
from mmfw.data.manifest import ManifestDataModule
from mmfw.train import build

SHARED_CACHE = Path(__file__).resolve().parents[2] / "data" / "cache"


def fetch_or_skip(name: str) -> Path:
    """The pinned package file of data set ``name``, fetched once into the shared test cache with the registry's own
    client; skipped where no registry can be reached, except under MMFW_REQUIRE_DATA=1 (.ci/run), where that is a
    failure."""
    try:
        return reg.fetch_package(reg.DATASETS[name].package, SHARED_CACHE / "registry" / "downloads")
    except DataUnavailableError as err:
        if os.environ.get(REQUIRE_DATA_ENV) == "1":
            pytest.fail(f"package registry not reachable and {REQUIRE_DATA_ENV}=1: {err}")
        pytest.skip(f"package registry not reachable: {err}")


@pytest.fixture(scope="module")
def drug_reviews_archive() -> Path:
    return fetch_or_skip("drug_reviews")


def test_a_file_with_the_wrong_digest_is_refused(tmp_path):
    package = reg.DATASETS["emoji"].package
    (tmp_path / package.filename).write_bytes(b"not the pinned tarball")
    with pytest.raises(DataUnavailableError, match=f"pinned to {package.sha256}.*Delete it"):
        reg.fetch_package(package, tmp_path)


def test_drug_reviews_manifest(tmp_path, drug_reviews_archive):
    downloads = tmp_path / "registry" / "downloads"
    downloads.mkdir(parents=True)
    shutil.copy(drug_reviews_archive, downloads)
    manifest = reg.ensure_dataset("drug_reviews", tmp_path)
    assert manifest.parent.name.startswith("drug_reviews-v1-") and (manifest.parent / "SOURCE.json").is_file()
    table = pd.read_csv(manifest)
    assert len(table) == 979
    assert table.split.value_counts().to_dict() == {"train": 480, "test": 379, "val": 120}
    assert set(table.positive) == {"yes", "no"} and set(table.rating) == {"negative", "neutral", "positive"}
    assert not table.review.str.contains("&#039;").any()  # HTML entities decoded
    assert reg.ensure_dataset("drug_reviews", tmp_path) == manifest  # second call: from the cache
    meta = {"kind": "tabular", "numeric": ["useful_count", "year"], "categorical": ["drug", "condition"]}
    datamodule = ManifestDataModule(
        manifest=str(manifest), modalities=["text", "meta"], target="positive", task="binary",
        columns={"text": {"kind": "text", "column": "review"}, "meta": meta},
    )  # fmt: skip
    datamodule.setup("fit")
    assert datamodule.task.class_names == ["no", "yes"]
    assert {s: len(r) for s, r in datamodule.split_rows.items()} == {"train": 480, "val": 120, "test": 379}


def test_preset_resolves_to_the_fetched_manifest(tmp_path, drug_reviews_archive, monkeypatch):
    downloads = tmp_path / "registry" / "downloads"
    downloads.mkdir(parents=True)
    shutil.copy(drug_reviews_archive, downloads)
    monkeypatch.setenv("MMFW_CACHE_DIR", str(tmp_path))
    cfg = compose_train(["experiment=drug_reviews"], tmp_path / "run")
    manifest = Path(OmegaConf.select(cfg, "datamodule.manifest"))
    assert manifest.is_file() and manifest.is_relative_to(tmp_path / "registry")
    assert list(cfg.modalities) == ["text", "meta"] and cfg.monitor.metric == "val/auroc"


@pytest.mark.slow
def test_emoji_preset_is_fetched_and_built(tmp_path, monkeypatch):
    """The real npm tarball (60 MB, `npm pack`, sha256-checked) written as a manifest and decoded by the preset's
    datamodule: 1906 64-px images with their names, 9 categories, the fixed 70/15/15 split."""
    downloads = tmp_path / "registry" / "downloads"
    downloads.mkdir(parents=True)
    shutil.copy(fetch_or_skip("emoji"), downloads)
    monkeypatch.setenv("MMFW_CACHE_DIR", str(tmp_path))
    cfg = compose_train(["experiment=emoji"], tmp_path / "run")
    manifest = Path(OmegaConf.select(cfg, "datamodule.manifest"))
    assert manifest.is_relative_to(tmp_path / "registry") and (manifest.parent / "LICENSE-emoji-data.txt").is_file()
    table = pd.read_csv(manifest)
    assert len(table) == 1906 and table.category.nunique() == 9
    assert table.split.value_counts().to_dict() == {"train": 1334, "val": 286, "test": 286}
    assert (manifest.parent / table.image[0]).is_file() and table.name[0] == "grinning face"
    datamodule, model = build(cfg)
    assert datamodule.task.kind == "multiclass" and len(datamodule.task.class_names) == 9
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 64, 64) and batch["text"].dtype == torch.long
    # The preset's text encoder pools word and character n-grams apart: the datamodule must hand it which ids are
    # word n-grams (datamodule.ngram_split_kinds), and the class scores come out of one batch.
    assert model.encoders["text"].word_buckets == 65536 // 2
    model.eval()
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (len(batch["image"]), 9) and torch.isfinite(logits).all()
