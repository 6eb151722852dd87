"""Which rows train, validate and test: a split column, a seeded stratified split, and k-fold cross-validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfw.data.manifest.reader import RowProblem, is_missing

SPLITS = ("train", "val", "test")


def split_value(value: Any, column: str) -> str:
    split = "" if is_missing(value) else str(value).strip().lower()
    if split not in SPLITS:
        raise RowProblem(column, f"split must be one of {list(SPLITS)}, got {value!r}")
    return split


def _stratified_ranks(n: int, strata: Sequence[str] | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced ranks ``(k + u_s) / n_s`` within each stratum (shuffled), and the row of each stratum kept in
    training (its last, so that every label is seen in training); no stratum kept without ``strata``."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(strata if strata is not None else [""] * n):
        groups.setdefault(key, []).append(i)
    rank = np.zeros(n)
    keep = np.zeros(n, dtype=bool)
    for key in sorted(groups):
        order = rng.permutation(groups[key])
        rank[order] = (np.arange(len(order)) + rng.random()) / len(order)
        if strata is not None:
            keep[order[-1]] = True
    return rank, keep


def seeded_split(
    n: int, strata: Sequence[str] | None, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Assign ``n`` rows to train/val/test: ``round(n * fraction)`` rows each for val and test.

    Stratified: each stratum (label) is shuffled, its rows get evenly spaced ranks ``(k + u_s) / n_s``, and
    val/test take the lowest ranks over all strata, so every stratum is split in proportion; the last row of
    each stratum stays in training so that every label is seen in training.
    """
    rank, keep = _stratified_ranks(n, strata, np.random.default_rng(seed))
    candidates = [i for i in np.argsort(rank, kind="stable") if not keep[i]]
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    out = ["train"] * n
    for i in candidates[:n_test]:
        out[i] = "test"
    for i in candidates[n_test : n_test + n_val]:
        out[i] = "val"
    return out


def fold_split(splits: Sequence[str], strata: Sequence[str] | None, folds: int, fold: int, seed: int) -> list[str]:
    """k-fold cross-validation over the rows ``splits`` puts in train or val: fold ``fold`` of ``folds`` validates,
    the others train; test rows stay test.

    Stratified like :func:`seeded_split`: the rows are ordered by their rank within their stratum and cut into
    ``folds`` consecutive parts, so every fold holds each label in proportion; the last row of each stratum stays
    in training in every fold, so that every label is seen in training.
    """
    pool = [i for i, s in enumerate(splits) if s != "test"]
    rank, keep = _stratified_ranks(len(pool), None if strata is None else [strata[i] for i in pool],
                                   np.random.default_rng(seed))  # fmt: skip
    candidates = [k for k in np.argsort(rank, kind="stable") if not keep[k]]
    out = list(splits)
    for i in pool:
        out[i] = "train"
    for position, k in enumerate(candidates):
        if position * folds // len(candidates) == fold:
            out[pool[k]] = "val"
    return out
