"""bench/pair_baselines.py on a generated manifest with drug_reviews' columns: the pairs are the preference run's
own, the rating-free baselines equal a direct computation, and the linear Bradley–Terry model finds a table column
that decides the preference."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, compose_train

from mmfw.objectives.pairs import PairDataModule
from mmfw.objectives.preference import Preference
from mmfw.train import build

LEVELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def pair_baselines():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "bench"))
        yield importlib.import_module("pair_baselines")


def write_reviews(root, n: int = 150) -> pd.DataFrame:
    """drug_reviews' columns; the rating is a bucket of ``year`` (so ``year`` decides every preference), the review
    length and the useful votes are noise (with ties)."""
    rng = np.random.default_rng(0)
    year = 2000 + rng.uniform(0, 15, n)
    rating = np.digitize(year, [2005, 2010])
    words = ["good", "bad", "pill", "dose", "sleep", "pain", "better", "worse"]
    rows = pd.DataFrame({
        "review": [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(n)],
        "drug": rng.choice(["a", "b", "c"], n),
        "condition": [f"c{i % 3}" for i in range(n)],
        "useful_count": rng.integers(0, 4, n),
        "year": year,
        "rating": [LEVELS[r] for r in rating],
        "positive": ["yes" if r == 2 else "no" for r in rating],
        "split": ["train"] * (n * 3 // 5) + ["val"] * (n // 5) + ["test"] * (n - n * 3 // 5 - n // 5),
    })  # fmt: skip
    rows.to_csv(root / "reviews.csv", index=False)
    return rows


def direct_pair_acc(part: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray) -> float:
    """Share of pairs whose chosen sample scores higher, a tie counting ½; and a check of the pairs themselves."""
    chosen, rejected = part.loc[pairs["chosen"]], part.loc[pairs["rejected"]]
    assert (chosen["condition"].to_numpy() == rejected["condition"].to_numpy()).all()
    rank = {v: i for i, v in enumerate(LEVELS)}
    assert (chosen["rating"].map(rank).to_numpy() > rejected["rating"].map(rank).to_numpy()).all()
    a, b = score[pairs["chosen"].to_numpy()], score[pairs["rejected"].to_numpy()]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def test_pair_baselines_on_the_preference_runs_pairs(pair_baselines, tmp_path):
    rows = write_reviews(tmp_path)
    results = pair_baselines.main([f"datamodule.manifest={tmp_path / 'reviews.csv'}", "encoder.text.min_df=1",
                                   "--output-dir", str(tmp_path / "run")])  # fmt: skip
    datamodule = pair_baselines.pair_datamodule(
        [*pair_baselines.README_OVERRIDES, f"datamodule.manifest={tmp_path / 'reviews.csv'}", "encoder.text.min_df=1"],
        tmp_path / "again",
    )
    assert isinstance(datamodule, PairDataModule)
    for split in ("val", "test"):
        part = rows[rows["split"] == split].reset_index(drop=True)  # dataset order = manifest order in the split
        pairs = datamodule.pairs[split]
        assert len(pairs) > 20
        length = direct_pair_acc(part, pairs, part["review"].str.len().to_numpy())
        votes = direct_pair_acc(part, pairs, part["useful_count"].to_numpy())
        assert results["length"][split]["pair_acc"] == pytest.approx(length, abs=1e-6)
        assert results["votes"][split]["pair_acc"] == pytest.approx(votes, abs=1e-6)
        assert 0.2 < length < 0.8 and 0.2 < votes < 0.8  # noise, as generated
    # `year` decides the preference: the table's linear model ranks (almost) every test pair right.
    assert results["bt_linear[meta]"]["test"]["pair_acc"] >= 0.95
    assert results["bt_linear"]["test"]["pair_acc"] >= 0.9
    assert results["bt_linear[text]"]["test"]["pair_acc"] < 0.8
    assert set(results) == {"length", "votes", "bt_linear", "bt_linear[text]", "bt_linear[meta]"}


def test_the_bradley_terry_model_sees_both_orientations(pair_baselines):
    import scipy.sparse as sp

    features = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(4, 3))
    pairs = pd.DataFrame({"chosen": [3, 0], "rejected": [1, 2], "target": [1.0, 1.0]})
    design, labels = pair_baselines.difference_design(features, pairs)
    expected = np.array([[6, 6, 6], [-6, -6, -6], [-6, -6, -6], [6, 6, 6]], dtype=np.float32)
    np.testing.assert_array_equal(design.toarray(), expected)
    np.testing.assert_array_equal(labels, [1, 1, 0, 0])


def test_the_preference_preset_trains_on_the_pairs_the_baselines_score(pair_baselines, tmp_path):
    """experiment=drug_reviews_preference (the README's reward model) builds the pairs bench/pair_baselines.py
    scores, a scalar reward head, and trains."""
    import pytorch_lightning as pl
    import torch

    write_reviews(tmp_path)
    manifest = [f"datamodule.manifest={tmp_path / 'reviews.csv'}", "encoder.text.min_df=1"]
    cfg = compose_train(["experiment=drug_reviews_preference", *manifest], tmp_path / "run")
    datamodule, model = build(cfg)
    assert isinstance(model.objective, Preference) and model.head.out_features == 1
    assert cfg.monitor.metric == "val/pair_acc"
    scored = pair_baselines.pair_datamodule([*pair_baselines.README_OVERRIDES, *manifest], tmp_path / "bench")
    for split in ("train", "val", "test"):
        assert datamodule.pairs[split].equals(scored.pairs[split])
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["val/pair_acc"])
