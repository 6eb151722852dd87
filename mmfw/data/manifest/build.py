"""Decoding a manifest's rows into the splits' tensors, once (the datamodule caches the result on disk).

Every configured column is decoded and checked, whichever ``modalities`` a run selects, so a unimodal baseline and a
multimodal run see exactly the same rows. The steps: decode each row (target, split, every column through its kind's
codec), infer and parse the targets, draw the split (and the cross-validation fold), number the labels from the
training split, fit the codecs' training statistics, assemble each split.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfw.contracts import TaskSpec
from mmfw.data.manifest.codecs import ColumnCodec
from mmfw.data.manifest.reader import ManifestError, RowProblem
from mmfw.data.manifest.splits import SPLITS, fold_split, seeded_split, split_value
from mmfw.data.manifest.targets import (
    infer_task,
    label_cells,
    note_merged_spellings,
    parse_target,
    raw_target,
    task_from_train,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitPlan:
    """How rows become targets and splits (the datamodule's settings of the same names)."""

    manifest: Path
    target: list[str]
    task: str | None
    label_delimiter: str
    split_column: str | None
    val_fraction: float
    test_fraction: float
    split_seed: int
    folds: int | None
    fold: int | None
    on_bad_sample: str


class _Rows:
    """Which rows are still alive, and the bad ones skipped (``on_bad_sample: skip``) or raised (``error``)."""

    def __init__(self, n: int, plan: SplitPlan) -> None:
        self.alive = np.ones(n, dtype=bool)
        self.skipped: list[dict[str, Any]] = []
        self.plan = plan

    def bad(self, i: int, problem: RowProblem) -> None:
        if self.plan.on_bad_sample == "error":
            raise ManifestError(problem.reason, file=self.plan.manifest, row=i + 1, column=problem.column)
        self.skipped.append({"file": str(self.plan.manifest), "row": i + 1, "column": problem.column,
                             "reason": problem.reason})  # fmt: skip
        self.alive[i] = False

    def living(self, rows: Any = None) -> list[int]:
        return [int(i) for i in (np.flatnonzero(self.alive) if rows is None else rows) if self.alive[i]]


def build_samples(
    records: list[dict[str, Any]], plan: SplitPlan, columns: dict[str, dict[str, Any]], codecs: dict[str, ColumnCodec]
) -> dict[str, Any]:
    """The decoded splits and everything the datamodule adopts from them (the disk cache's content)."""
    rows = _Rows(len(records), plan)
    log.info("decoding %d rows of %s (cached afterwards)", len(records), plan.manifest)
    values, raw_targets, splits = _decode_rows(records, plan, columns, codecs, rows)
    kind = plan.task or infer_task([raw_targets[i] for i in rows.living()], plan.target)
    if plan.task is None:
        log.info("task inferred as %s from column(s) %s; set datamodule.task to override", kind, plan.target)
    targets: list[Any] = [None] * len(records)
    for i in rows.living():
        try:
            targets[i] = parse_target(raw_targets[i], kind, plan.target, plan.label_delimiter)
        except RowProblem as problem:
            rows.bad(i, problem)
    _log_values(records, plan, kind, raw_targets, codecs, rows)
    splits = _draw_splits(plan, kind, targets, splits, rows)
    train = [i for i in rows.living() if splits[i] == "train"]
    if not train:
        raise ManifestError("the training split is empty", file=plan.manifest, column=plan.split_column)
    task, encode = task_from_train(kind, plan.target, [targets[i] for i in train], file=plan.manifest)
    encoded: list[Any] = [None] * len(records)
    for i in rows.living():
        try:
            encoded[i] = encode(targets[i])
        except RowProblem as problem:
            rows.bad(i, problem)  # a val/test label the training split never has
    train = rows.living(train)
    for codec in codecs.values():
        codec.fit({m: values[m] for m in codec.specs}, train)
    problems = [p for codec in codecs.values() for p in codec.bad_rows({m: values[m] for m in codec.specs},
                                                                         rows.living())]  # fmt: skip
    for i, problem in sorted(problems, key=lambda p: p[0]):
        rows.bad(i, problem)
    parts = {s: _assemble(rows.living(i for i in range(len(records)) if splits[i] == s), values, encoded, task,
                          columns, codecs) for s in SPLITS}  # fmt: skip
    return {
        "modalities": list(columns),
        "splits": parts,
        "task": {"kind": task.kind, "num_outputs": task.num_outputs, "class_names": task.class_names},
        "encoder_inputs": {m: codecs[spec["kind"]].encoder_inputs(m) for m, spec in columns.items()},
        "skipped": sorted(rows.skipped, key=lambda s: s["row"]),
        "truncated": _total_truncated(parts),
        "codec_state": {kind: codec.state() for kind, codec in codecs.items()},
    }


def _decode_rows(
    records: list[dict[str, Any]],
    plan: SplitPlan,
    columns: dict[str, dict[str, Any]],
    codecs: dict[str, ColumnCodec],
    rows: _Rows,
) -> tuple[dict[str, list[Any]], list[Any], list[str | None]]:
    """Per modality the decoded value of every row (None = missing), the raw targets and the split column's values."""
    n = len(records)
    values: dict[str, list[Any]] = {m: [None] * n for m in columns}
    raw_targets: list[Any] = [None] * n
    splits: list[str | None] = [None] * n
    use_split_column = plan.split_column is not None and any(plan.split_column in r for r in records)
    for i, record in enumerate(records):
        try:
            raw_targets[i] = raw_target(record, plan.target)
            if use_split_column:
                splits[i] = split_value(record.get(plan.split_column), plan.split_column)
            for m, spec in columns.items():
                values[m][i] = codecs[spec["kind"]].decode(record, spec)
        except RowProblem as problem:
            rows.bad(i, problem)
    return values, raw_targets, splits


def _log_values(records: list[dict[str, Any]], plan: SplitPlan, kind: str, raw_targets: list[Any],
                codecs: dict[str, ColumnCodec], rows: _Rows) -> None:  # fmt: skip
    """Tell the labels (and categories) that are one value written two ways."""
    if kind != "regression":
        column = ", ".join(plan.target)
        cells = (x for i in rows.living() for x in label_cells(raw_targets[i], kind, plan.label_delimiter, column))
        note_merged_spellings(column, "class", cells)
    for codec in codecs.values():
        codec.log_values(records, rows.living())


def _draw_splits(plan: SplitPlan, kind: str, targets: list[Any], splits: list[str | None], rows: _Rows) -> list[Any]:
    """The split column's values, else a seeded stratified split; then the cross-validation fold, if any."""
    living = rows.living()
    strata = None if kind == "regression" else [json.dumps(targets[i]) for i in living]
    chosen = [splits[i] for i in living]
    if any(s is None for s in chosen):  # no split column
        chosen = seeded_split(len(living), strata, plan.val_fraction, plan.test_fraction, plan.split_seed)
    if plan.folds is not None:
        chosen = fold_split(chosen, strata, plan.folds, plan.fold, plan.split_seed)
    out: list[Any] = [None] * len(splits)
    for i, split in zip(living, chosen, strict=True):
        out[i] = split
    return out


def _assemble(rows: list[int], values: dict[str, list[Any]], encoded: list[Any], task: TaskSpec,
              columns: dict[str, dict[str, Any]], codecs: dict[str, ColumnCodec]) -> dict[str, Any]:  # fmt: skip
    """One split: every column's inputs, the mask ``(N, M)`` over all columns, the target and the 1-based rows."""
    mask = torch.zeros(len(rows), len(columns), dtype=torch.bool)
    inputs: dict[str, Any] = {}
    truncated: dict[str, dict[str, int]] = {}  # per text modality: texts cut to the tokenizer's length, texts present
    for j, (m, spec) in enumerate(columns.items()):
        column = [values[m][i] for i in rows]
        mask[:, j] = torch.tensor([v is not None for v in column], dtype=torch.bool)
        inputs[m], counts = codecs[spec["kind"]].assemble(m, column)
        if counts is not None:
            truncated[m] = counts
    target = task.target_tensor([encoded[i] for i in rows])
    return {"inputs": inputs, "mask": mask, "target": target, "rows": torch.tensor([i + 1 for i in rows]),
            "truncated": truncated}  # fmt: skip


def _total_truncated(parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per text modality, the texts cut and the texts present over all splits."""
    total: dict[str, dict[str, int]] = {}
    for part in parts.values():
        for m, count in part.pop("truncated").items():
            entry = total.setdefault(m, {"truncated": 0, "texts": 0})
            entry["truncated"] += count["truncated"]
            entry["texts"] += count["texts"]
    return total
