"""The target: the task kind inferred from the labels, each row's target parsed, and labels numbered from the training
split (the task's class names)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from mmfw.contracts import TaskSpec
from mmfw.data.manifest.reader import ManifestError, RowProblem, as_number, feature_number, is_missing, scalar
from mmfw.data.tabular import category_key, decimal_value

log = logging.getLogger(__name__)


def raw_target(record: dict[str, Any], columns: Sequence[str]) -> Any:
    """The target cell(s) of a row as written (a list for several target columns)."""
    values = [record.get(c) for c in columns]
    for column, value in zip(columns, values, strict=True):
        if is_missing(value):
            raise RowProblem(column, "the target is missing (empty cell or NaN); every row needs one")
    return values if len(values) > 1 else values[0]


def infer_task(targets: list[Any], columns: list[str]) -> str:
    if len(columns) > 1:
        return "regression"
    if any(isinstance(t, list) for t in targets):
        return "multilabel"
    numbers = [as_number(t) for t in targets]
    if targets and all(x is not None for x in numbers):
        if not all(float(x).is_integer() for x in numbers):
            return "regression"
    return "binary" if len({category_key(t) for t in targets}) == 2 else "multiclass"


def parse_target(raw: Any, kind: str, columns: list[str], delimiter: str) -> Any:
    column = ", ".join(columns)
    if kind == "regression":
        cells = raw if len(columns) > 1 else [raw]
        parsed = [feature_number(v, c, "regression target") for v, c in zip(cells, columns, strict=True)]
        return parsed if len(columns) > 1 else parsed[0]
    if kind == "multilabel":
        return sorted({category_key(x) for x in label_cells(raw, kind, delimiter, column)})
    if isinstance(raw, list):
        raise RowProblem(column, f"a {kind} target must be one label, got the list {raw!r}")
    return category_key(scalar(raw, column))


def label_cells(raw: Any, kind: str, delimiter: str, column: str) -> list[Any]:
    """The labels of one target cell as written: a multilabel list or delimited string, else the cell."""
    if kind != "multilabel":
        return [raw]
    labels = raw if isinstance(raw, list) else str(scalar(raw, column)).split(delimiter)
    return [x for x in labels if str(scalar(x, column)).strip()]


def note_merged_spellings(column: str, what: str, cells: Iterable[Any]) -> None:
    """Log the values written differently that :func:`category_key` makes one (``2`` and ``"2.0"``)."""
    spellings: dict[str, set[str]] = {}
    for cell in cells:
        spellings.setdefault(category_key(cell), set()).add(str(cell).strip())
    merged = {key: sorted(v) for key, v in spellings.items() if len(v) > 1}
    if merged:
        listed = "; ".join(f"{' and '.join(map(repr, v))} are the same number, so one {what} {key!r}"
                           for key, v in list(merged.items())[:5])  # fmt: skip
        log.warning("column %r: %s%s", column, listed, "; ..." if len(merged) > 5 else "")


def label_order(label: str) -> tuple[int, Decimal, str]:
    """Numeric labels first, by exact value (two 20-digit ids are not equal), then the others by text."""
    number = decimal_value(label)
    return (0, number, "") if number is not None else (1, Decimal(0), label)


def task_from_train(
    kind: str, columns: Sequence[str], train_targets: list[Any], *, file: Path
) -> tuple[TaskSpec, Callable[[Any], Any]]:
    """The task (its labels as found in the training split, numeric ones first) and the function that encodes a
    parsed target as the batch carries it (a class index, a multi-hot list or the number(s))."""
    column = ", ".join(columns)
    if kind == "regression":
        return TaskSpec("regression", len(columns), None), lambda t: t
    labels = {x for t in train_targets for x in (t if kind == "multilabel" else [t])}
    names = sorted(labels, key=label_order)
    if kind == "binary" and len(names) != 2:
        raise ManifestError(
            f"a binary task needs exactly two labels in the training split, found {names}; "
            "set datamodule.task=multiclass (or fix the labels)",
            file=file, column=column,
        )  # fmt: skip
    if kind == "multiclass" and len(names) < 2:
        raise ManifestError(f"the training split has only the label(s) {names}", file=file, column=column)
    index = {name: i for i, name in enumerate(names)}

    def encode(target: Any) -> Any:
        for label in target if kind == "multilabel" else [target]:
            if label not in index:
                raise RowProblem(column, f"label {label!r} never occurs in the training split ({names})")
        if kind == "multilabel":
            hot = [0.0] * len(names)
            for label in target:
                hot[index[label]] = 1.0
            return hot
        return index[target]

    return TaskSpec(kind, 1 if kind == "binary" else len(names), names), encode
