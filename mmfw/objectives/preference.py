"""Reward models from human preferences (Bradley & Terry 1952; the reward-model stage of RLHF, Ouyang et al. 2022).

A scalar reward ``r(x)`` per sample; for a pair (chosen ``c``, rejected ``j``) with ``d = r(x_c) - r(x_j)``::

    P(c ≻ j) = σ(d - m)          L = -1/N Σ [ y log σ(d - m) + (1 - y) log σ(-(d - m)) ]

``y = 1`` for a strict preference and ``y = ½`` for a tie kept with ``ties="half"`` (it pulls ``d`` towards 0);
``m ≥ 0`` an optional margin (Touvron et al. 2023: larger for clearer preferences). With ``y = 1``, ``m = 0`` this is
``-mean log σ(d)``.

Metrics (:class:`PreferenceMetrics`) over strict pairs, each pair counted in both orientations — ``(σ(d), 1)`` and
``(σ(-d), 0)`` — so that an orientation-free score is well defined: ``pair_acc`` (share of pairs with ``d > 0``;
``d = 0`` counts ½), ``pair_auroc`` (AUROC of the reward differences: ``P(d_a + d_b > 0)`` over pairs ``a, b``) and
``pair_ece`` (expected calibration error of ``σ(d)``, 10 equal-width bins).

Pairs come from a pairs manifest (:func:`read_pairs`: ``chosen``/``rejected`` ids of rows of a sample manifest) or
from ratings (:func:`pairs_from_ratings`: within a group, the higher-rated sample is chosen).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryCalibrationError

from mmfw.contracts import TaskSpec
from mmfw.objectives.base import Objective

Ties = Literal["drop", "half"]


def bradley_terry_loss(
    r_chosen: Tensor, r_rejected: Tensor, *, margin: float | Tensor = 0.0, target: Tensor | None = None
) -> Tensor:
    """The module docstring's ``L`` for rewards ``(N,)``; ``margin`` a float or ``(N,)``; ``target`` ``(N,)`` in
    [0, 1] (None: every pair a strict preference, ``y = 1``)."""
    d = r_chosen - r_rejected - margin
    if target is None:
        return -F.logsigmoid(d).mean()
    return F.binary_cross_entropy_with_logits(d, target.to(d.dtype))


class PreferenceMetrics(MetricCollection):
    """``pair_acc``, ``pair_auroc`` and ``pair_ece`` (see the module docstring); ``update(r_chosen, r_rejected)``.

    Args:
        prefix: prepended to every name (``val/``).
        postfix: appended to every name (``[-image]`` for the modality contribution).
    """

    def __init__(self, prefix: str | None = None, postfix: str | None = None) -> None:
        super().__init__(
            {"pair_acc": BinaryAccuracy(), "pair_auroc": BinaryAUROC(), "pair_ece": BinaryCalibrationError(n_bins=10)},
            prefix=prefix,
            postfix=postfix,
            compute_groups=False,
        )

    def update(self, r_chosen: Tensor, r_rejected: Tensor) -> None:  # type: ignore[override]
        """Rewards ``(N,)`` of strict pairs (ties carry no orientation: leave them out)."""
        p = torch.sigmoid((r_chosen - r_rejected).detach().float())
        probs = torch.cat([p, 1 - p])  # σ(-d) = 1 - σ(d)
        target = torch.cat([torch.ones_like(p), torch.zeros_like(p)]).long()
        super().update(probs, target)


class PairsError(ValueError):
    """A pairs manifest or rating column that cannot be turned into pairs; the message names the file and row."""


def pairs_from_ratings(
    frame: pd.DataFrame,
    rating: str,
    *,
    group: str | list[str] | None = None,
    ties: Ties = "drop",
    order: list[str] | None = None,
    id_column: str | None = None,
) -> pd.DataFrame:
    """Every pair of rated rows within a group, the higher-rated one chosen.

    Args:
        frame: the sample manifest.
        rating: its rating column (stars, votes, a score); a row without a rating is in no pair.
        group: the column(s) whose value pairs must share (a prompt, a product, a condition; add the split column so
            that no pair crosses splits). None: all rows form one group. A row without a group value is in no pair.
        ties: ``drop`` (default: a tie says nothing about which is better) or ``half``: each tied pair is kept
            once, with ``target = ½`` (the loss then pulls the two rewards together).
        order: the rating values from worst to best, for ratings that are labels (``[negative, neutral,
            positive]``); None: the ratings are numbers.
        id_column: the column that identifies a row; None: the frame's index.

    Returns:
        One row per pair: ``chosen``, ``rejected`` (ids), ``target`` (1.0, or 0.5 for a tie) and ``gap``
        (``rating(chosen) - rating(rejected)``, in ``order`` steps for labels), e.g. for a margin.
    """
    if ties not in ("drop", "half"):
        raise PairsError(f"ties must be 'drop' or 'half', got {ties!r}")
    groups = [group] if isinstance(group, str) else list(group or [])
    for column in [rating, *groups, *([id_column] if id_column else [])]:
        if column not in frame.columns:
            raise PairsError(f"column {column!r} is not in the manifest (its columns: {list(frame.columns)})")
    ids = frame[id_column] if id_column else pd.Series(frame.index, index=frame.index)
    if ids.duplicated().any():
        raise PairsError(f"ids in {id_column or 'the index'} repeat (e.g. {ids[ids.duplicated()].iloc[0]!r}): "
                         "pairs need one row per id")  # fmt: skip
    raw = frame[rating]
    rated = raw.notna() & (raw.astype(str).str.strip() != "")
    if order is not None:
        rank = {str(v): float(i) for i, v in enumerate(order)}
        unknown = sorted(set(raw[rated].astype(str)) - set(rank))
        if unknown:
            raise PairsError(f"rating column {rating!r} holds {unknown}, which `order` {order} does not list")
        score = raw.astype(str).map(rank)
    else:
        score = pd.to_numeric(raw.where(rated), errors="coerce")
        bad = rated & score.isna()
        if bad.any():
            first = bad.idxmax()
            raise PairsError(f"rating column {rating!r} row {first} holds {raw[first]!r}, not a number: give `order` "
                             "(worst to best) for ratings that are labels")  # fmt: skip
    keep = rated & (frame[groups].notna().all(axis=1) if groups else True)
    table = pd.DataFrame({"id": ids[keep], "score": score[keep]})
    keys = frame.loc[keep, groups].astype(str).agg("\x1f".join, axis=1) if groups else pd.Series("", index=table.index)
    rows = []
    for _, members in table.groupby(keys.values, sort=False):
        for (ia, sa), (ib, sb) in combinations(zip(members["id"], members["score"], strict=True), 2):
            if sa == sb:
                if ties == "half":
                    rows.append((ia, ib, 0.5, 0.0))
            else:
                rows.append((ia, ib, 1.0, sa - sb) if sa > sb else (ib, ia, 1.0, sb - sa))
    return pd.DataFrame(rows, columns=["chosen", "rejected", "target", "gap"]).astype({"target": float, "gap": float})


def read_pairs(path: str | Path, sample_ids: list[str] | pd.Index) -> pd.DataFrame:
    """A pairs manifest (CSV/TSV/JSONL/Parquet) with columns ``chosen`` and ``rejected``: ids of samples.

    Optional columns: ``target`` (in [0, 1], default 1) and ``margin`` (>= 0, default 0). Every id must be one of
    ``sample_ids`` (the sample manifest's id column, as strings); an unknown id, a sample paired with itself or a
    missing id is an error naming the file and the row (1 = the first pair).
    """
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"pairs manifest {path} not found: point the pairs file setting at a CSV/JSONL/Parquet file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        pairs = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    elif suffix in (".jsonl", ".ndjson"):
        pairs = pd.read_json(path, lines=True, dtype=False)
    elif suffix in (".parquet", ".pq"):
        pairs = pd.read_parquet(path)
    else:
        raise PairsError(f"{path}: unknown pairs manifest format {suffix!r}: use .csv, .tsv, .jsonl or .parquet")
    missing = [c for c in ("chosen", "rejected") if c not in pairs.columns]
    if missing:
        raise PairsError(f"{path}: no column {missing}; a pairs manifest needs `chosen` and `rejected` (sample ids), "
                         f"it has {list(pairs.columns)}")  # fmt: skip
    known = {str(i) for i in sample_ids}
    for column in ("chosen", "rejected"):
        pairs[column] = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in pairs[column]]
    for row, (chosen, rejected) in enumerate(zip(pairs["chosen"], pairs["rejected"], strict=True), start=1):
        for column, value in (("chosen", chosen), ("rejected", rejected)):
            if value == "":
                raise PairsError(f"{path} row {row}: `{column}` is empty; every pair needs both sample ids")
            if value not in known:
                raise PairsError(f"{path} row {row}: {column} id {value!r} is not a sample of the sample manifest "
                                 f"(ids like {sorted(known)[:3]}); fix the id or add that sample")  # fmt: skip
        if chosen == rejected:
            raise PairsError(f"{path} row {row}: sample {chosen!r} is paired with itself")
    for column, default in (("target", 1.0), ("margin", 0.0)):
        values = pd.to_numeric(pairs[column], errors="coerce") if column in pairs else pd.Series(default, pairs.index)
        bad = values.isna() | (values < 0) | ((values > 1) if column == "target" else False)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            allowed = "a number in [0, 1]" if column == "target" else "a number >= 0"
            raise PairsError(f"{path} row {row}: {column} {pairs[column].iloc[row - 1]!r} is not {allowed}")
        pairs[column] = values.astype(float)
    return pairs


class PairMetrics(PreferenceMetrics):
    """:class:`PreferenceMetrics` updated as the module updates every split's metrics: ``update(rewards, target)``
    with the ``2N`` rewards of a pair batch (chosen first) and the pairs' targets; ties (target ≠ 1) are left out."""

    def update(self, rewards: Tensor, target: Tensor) -> None:  # type: ignore[override]
        n = target.shape[0]
        strict = target == 1
        if strict.any():
            super().update(rewards[:n][strict], rewards[n:][strict])


class Preference(Objective):
    """``objective=preference``: a scalar reward ``head(fusion(encoders(x)))`` trained with the Bradley–Terry loss
    on pair batches (:class:`mmfw.objectives.pairs.PairDataModule`: ``2N`` samples, chosen first).

    Args:
        task: the sample datamodule's task (not predicted: the reward replaces it).
        in_dims: ``{modality: encoder out_dim}``.
        margin: added to each pair's own margin (a pairs file's ``margin`` column, else 0) in ``σ(d - m)``.
    """

    auto_monitor = "val/pair_acc"
    output_name = "reward"

    def __init__(self, *, task: TaskSpec, in_dims: dict[str, int], margin: float = 0.0) -> None:
        super().__init__(task=task, in_dims=in_dims)
        if margin < 0:
            raise ValueError(f"objective.margin must be >= 0, got {margin}")
        self.margin = margin

    @property
    def head_outputs(self) -> int:
        return 1

    def loss_and_outputs(
        self, module: Any, batch: dict[str, Any], mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        from mmfw.objectives.pairs import PAIR_MARGIN_KEY, PAIR_TARGET_KEY

        if PAIR_TARGET_KEY not in batch:
            raise ValueError("objective=preference needs pair batches: configure objective.pairs (a pairs file or a "
                             "rating column) so that the datamodule is wrapped into pairs")  # fmt: skip
        rewards = module(batch, mask).squeeze(-1)  # (2N,): chosen, then rejected
        target = batch[PAIR_TARGET_KEY]
        n = target.shape[0]
        margin = batch[PAIR_MARGIN_KEY] + self.margin
        return bradley_terry_loss(rewards[:n], rewards[n:], margin=margin, target=target), rewards, target

    def metrics(self, prefix: str, postfix: str | None = None) -> MetricCollection:
        return PairMetrics(prefix=prefix, postfix=postfix)

    def prediction_columns(self, outputs: Tensor, **_: Any) -> dict[str, list[Any]]:
        """``reward`` per sample (``mmfw-predict``): comparable across samples, ``σ(r_a - r_b)`` is the model's
        probability that ``a`` is preferred to ``b``; the sample task's classes are not predicted."""
        return {"reward": outputs[:, 0].float().tolist()}
