"""Baselines a reward model (``objective=preference``) has to beat, on exactly the pairs it trains and is tested on.

    python bench/pair_baselines.py                      # the README's reward model: experiment=drug_reviews_preference
    python bench/pair_baselines.py <more overrides>     # appended to the README's overrides (another manifest, ...)

The pairs are not rebuilt here: the config is composed as ``mmfw-train experiment=drug_reviews_preference`` (with
the extra overrides) would compose it and :func:`mmfw.train.build` makes the run's own
:class:`~mmfw.objectives.pairs.PairDataModule` (ratings → pairs within a condition and a split, ties dropped, the
``max_pairs`` subset if any). Each baseline gives every sample of a split a score ``r``; a pair is scored by
``r(chosen) - r(rejected)`` with mmfw's own :class:`~mmfw.objectives.preference.PreferenceMetrics` (``pair_acc``:
a tie counts ½; ``pair_auroc``), as the reward model's test metrics are:

- rating-free ``length``: the number of characters of the text column (the longer review preferred);
- rating-free ``votes``: a numeric manifest column (more useful votes preferred);
- ``bt_linear`` (all modalities) and ``bt_linear[<modality>]`` (each alone): a linear Bradley–Terry model
  ``r = w·x``: logistic regression without intercept on ``x_c - x_r`` (label 1) and ``x_r - x_c`` (label 0) of the
  train pairs; ``x`` is the features of ``mmfw-baseline`` on the same samples
  (:func:`mmfw.baseline.features.feature_sets`: TF-IDF word 1-2 + char 2-5 grams of the review, the standardised
  numeric + one-hot categorical table columns, each block scaled to unit mean squared norm on train).
  ``C`` is chosen on the val pairs (``pair_acc``, then ``pair_auroc``; the first of the grid on a tie).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _common import compose_config
from sklearn.linear_model import LogisticRegression

from mmfw.baseline.features import ALL, SPLITS, FeatureSettings, feature_sets, modality_kinds, split_arrays
from mmfw.data.manifest.reader import read_manifest
from mmfw.objectives.pairs import PairDataModule
from mmfw.objectives.preference import PreferenceMetrics
from mmfw.train import build

README_OVERRIDES = ["experiment=drug_reviews_preference", "logger=csv"]
GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def pair_datamodule(overrides: Sequence[str], output_dir: Path) -> PairDataModule:
    """The run's pair datamodule, built by mmfw.train.build from ``mmfw-train <overrides>``'s config."""
    cfg = compose_config(list(overrides), output_dir)
    datamodule, _ = build(cfg)
    if not isinstance(datamodule, PairDataModule):
        raise SystemExit(f"the overrides {list(overrides)} do not make pairs: add objective=preference and its pairs")
    return datamodule


def split_frames(datamodule: PairDataModule) -> dict[str, pd.DataFrame]:
    """Each split's manifest rows in dataset order (row ``i`` is the pairs' sample ``i``), read as the pair
    datamodule reads them."""
    samples = datamodule.samples
    frame = pd.DataFrame(read_manifest(samples.manifest, encoding=samples.encoding))
    frame.index = pd.RangeIndex(1, len(frame) + 1)  # data row numbers, as in splits.csv and split_rows
    return {s: frame.loc[samples.split_rows[s]].reset_index(drop=True) for s in SPLITS}


def pair_metrics(scores: np.ndarray, pairs: pd.DataFrame) -> dict[str, float]:
    """``pair_acc`` and ``pair_auroc`` of per-sample scores on the strict pairs (mmfw's PreferenceMetrics)."""
    strict = pairs[pairs["target"] == 1.0]
    chosen = torch.as_tensor(scores[strict["chosen"].to_numpy()], dtype=torch.float64)
    rejected = torch.as_tensor(scores[strict["rejected"].to_numpy()], dtype=torch.float64)
    metrics = PreferenceMetrics()
    metrics.update(chosen, rejected)
    return {k: float(v) for k, v in metrics.compute().items() if k in ("pair_acc", "pair_auroc")}


def text_length(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Characters of a text column (a missing text: 0)."""
    return frame[column].fillna("").astype(str).str.len().to_numpy(dtype=np.float64)


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric column (a missing value: the lowest score, -inf)."""
    return pd.to_numeric(frame[column], errors="coerce").fillna(-np.inf).to_numpy(dtype=np.float64)


def difference_design(features: sp.csr_matrix, pairs: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
    """Both orientations of every strict pair: ``x_c - x_r`` labelled 1 and ``x_r - x_c`` labelled 0."""
    strict = pairs[pairs["target"] == 1.0]
    diff = features[strict["chosen"].to_numpy()] - features[strict["rejected"].to_numpy()]
    labels = np.r_[np.ones(diff.shape[0]), np.zeros(diff.shape[0])]
    return sp.vstack([diff, -diff], format="csr"), labels


def fit_bradley_terry(
    features: dict[str, sp.csr_matrix], pairs: dict[str, pd.DataFrame], grid: Sequence[float] = GRID
) -> dict[str, Any]:
    """The linear Bradley–Terry model (see the module docstring): weights fitted on train pairs for each ``C`` of the
    grid, the one best on val pairs kept; its val and test metrics."""
    design, labels = difference_design(features["train"], pairs["train"])
    best: dict[str, Any] | None = None
    for c in grid:
        model = LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(design, labels)
        val = pair_metrics(features["val"] @ model.coef_[0], pairs["val"])
        if best is None or (val["pair_acc"], val["pair_auroc"]) > (best["val"]["pair_acc"], best["val"]["pair_auroc"]):
            best = {"C": c, "val": val, "weights": model.coef_[0]}
    assert best is not None, "an empty grid"
    best["test"] = pair_metrics(features["test"] @ best["weights"], pairs["test"])
    return best


def pair_baselines(
    datamodule: PairDataModule,
    *,
    length_column: str,
    votes_column: str,
    grid: Sequence[float] = GRID,
    settings: FeatureSettings | None = None,
) -> dict[str, dict[str, Any]]:
    """``{baseline: {"val": metrics, "test": metrics, ...}}`` for the pair datamodule's pairs (module docstring)."""
    pairs, frames = datamodule.pairs, split_frames(datamodule)
    out: dict[str, dict[str, Any]] = {}
    for name, score in (("length", lambda f: text_length(f, length_column)),
                        ("votes", lambda f: numeric_column(f, votes_column))):  # fmt: skip
        out[name] = {s: pair_metrics(score(frames[s]), pairs[s]) for s in ("val", "test")}
    samples, modalities = datamodule.samples, list(datamodule.modalities)
    data = {s: split_arrays(samples, s, modalities) for s in SPLITS}
    sets, described = feature_sets(data, modality_kinds(samples), modalities, settings or FeatureSettings())
    for name in [ALL, *(m for m in modalities if m in sets)]:  # all modalities, then each alone (when several)
        key = "bt_linear" if name == ALL else f"bt_linear[{name}]"
        out[key] = fit_bradley_terry(sets[name], pairs, grid)
        out[key]["features"] = described if name == ALL else {name: described[name]}
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="appended to the README's preference overrides")
    parser.add_argument("--length-column", default="review", help="the text column of the length baseline")
    parser.add_argument("--votes-column", default="useful_count", help="the numeric column of the votes baseline")
    parser.add_argument("--output-dir", default="logs/pair_baselines", help="the composed config's run folder")
    args = parser.parse_args(argv)
    datamodule = pair_datamodule([*README_OVERRIDES, *args.overrides], Path(args.output_dir).absolute())
    sizes = {s: int((datamodule.pairs[s]["target"] == 1.0).sum()) for s in SPLITS}
    print(f"strict pairs: {sizes}")
    results = pair_baselines(datamodule, length_column=args.length_column, votes_column=args.votes_column)
    labels = {"length": f"longer {args.length_column} preferred", "votes": f"more {args.votes_column} preferred",
              "bt_linear": "linear Bradley-Terry (C={C:g} on val)"}  # fmt: skip
    labels |= {k: f"linear Bradley-Terry, {k[10:-1]} only (C={{C:g}})" for k in results if k.startswith("bt_linear[")}
    print(f"{'baseline':<40} {'val pair_acc':>13} {'test pair_acc':>14} {'test pair_auroc':>16}")
    for name, result in results.items():
        label = labels[name].format(**result)
        print(f"{label:<40} {100 * result['val']['pair_acc']:>13.1f} {100 * result['test']['pair_acc']:>14.1f} "
              f"{100 * result['test']['pair_auroc']:>16.1f}")  # fmt: skip
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
