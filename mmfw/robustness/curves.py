"""Summaries of a metric-vs-corruption-level curve, and the modality subsets of a missing-modality sweep.

A curve is ``f_0, ..., f_K``: ``f_0`` the clean metric, ``f_k`` the metric at the k-th (increasingly severe) level.

- ``auc``: trapezoidal area under ``f`` over the levels in their own units, ``Σ_k |x_{k+1} - x_k| (f_k + f_{k+1}) / 2``.
- ``relative_robustness`` (MultiBench, Liang et al., 2021, ``eval_scripts/robustness.py``): the area under ``f``
  over evenly spaced severities in ``[0, 1]``, ``Σ_k (f_k + f_{k+1}) / 2 · 1/K``. MultiBench's helper uses a fixed
  step of 0.1 because its sweeps have 11 points; for 11 points the two agree. MultiBench then min-max normalises
  the areas over the methods it compares, which needs the other methods' runs (compare runs' robustness.json).
- ``effective_robustness`` (MultiBench): ``Σ_k (f_k - (b_k + f_0 - b_0))`` — how much better ``f`` holds up than a
  baseline curve ``b`` (MultiBench: late fusion) shifted to the same clean value.

For a lower-is-better metric (mse) the same formulas hold; a smaller area is then the more robust model.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations


def auc(values: Sequence[float], levels: Sequence[float]) -> float:
    """Trapezoidal area under ``values`` over ``levels`` (same length >= 2), widths taken as ``|Δlevel|``."""
    if len(values) != len(levels) or len(values) < 2:
        raise ValueError(f"auc needs >= 2 points and as many levels as values, got {len(values)} and {len(levels)}")
    return float(sum(abs(levels[k + 1] - levels[k]) * (values[k] + values[k + 1]) / 2 for k in range(len(values) - 1)))


def relative_robustness(values: Sequence[float]) -> float:
    """MultiBench's relative robustness: area under ``values`` (clean first) over severities spaced evenly in [0, 1]."""
    if len(values) < 2:
        raise ValueError(f"relative robustness needs the clean value and at least one level, got {len(values)} values")
    step = 1.0 / (len(values) - 1)
    return float(sum((values[k] + values[k + 1]) * step / 2 for k in range(len(values) - 1)))


def effective_robustness(values: Sequence[float], baseline: Sequence[float]) -> float:
    """MultiBench's effective robustness of ``values`` against ``baseline`` (both clean first, same levels)."""
    if len(values) != len(baseline):
        raise ValueError(f"effective robustness needs curves of equal length, got {len(values)} and {len(baseline)}")
    shift = values[0] - baseline[0]
    return float(sum(f - (b + shift) for f, b in zip(values, baseline, strict=True)))


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` (the full set first, then by size), each in the given order."""
    return [combo for size in range(len(modalities), 0, -1) for combo in combinations(modalities, size)]
