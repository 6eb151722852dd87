"""Tabular encoding with statistics fitted on the training split only.

Numeric column ``j``: ``x' = (x - mean_j) / std_j`` (train mean and population std in float64; std 1 when
constant), a missing value becomes 0 with ``numeric_missing[:, j] = True``. Categorical column ``k``: the train
values sorted, numbered from 1; a value never seen in training, or a missing one, is the unknown bucket 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_RELATIVE_SPREAD = 1e3 * np.finfo(np.float64).eps
"""A std below this fraction of the column's largest magnitude is float64 rounding noise, not spread (six 0.1s
have a computed std of 1.4e-17), so the column counts as constant."""


def category_key(value: object) -> str:
    """The string a label or categorical value is compared by.

    Numbers, and strings written as decimal numbers, compare by their exact decimal value: ``2``, ``2.0``,
    ``"2.0"`` and ``"2e0"`` are one category ``"2"``, while ``"0.1"`` and ``"0.10000000000000001"`` or two
    20-digit ids stay apart (no rounding to float). Other strings are kept as written (stripped).
    """
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value) if isinstance(value, float) else str(value).strip()
    number = decimal_value(text)
    if number is None:
        return text
    if number.is_zero():
        return "0"
    number = number.normalize()
    return format(number, "f") if -30 <= number.as_tuple().exponent <= 30 else str(number)


def decimal_value(text: str) -> Decimal | None:
    """The exact value of ``text`` written as a decimal number (``2``, ``-0.5``, ``1e3``), else None."""
    return Decimal(text) if _DECIMAL.fullmatch(text) else None


@dataclass
class TabularStats:
    """Train-split statistics of one tabular modality.

    Attributes:
        numeric: numeric column names, in input order.
        categorical: categorical column names, in input order.
        mean: train mean per numeric column.
        std: train population std per numeric column (1.0 where constant or undefined).
        vocab: per categorical column, the train categories in id order (id = position + 1; 0 is unknown).
    """

    numeric: list[str]
    categorical: list[str]
    mean: list[float]
    std: list[float]
    vocab: list[list[str]]

    @property
    def cardinalities(self) -> list[int]:
        """Known categories per categorical column (the encoder adds one row for the unknown bucket)."""
        return [len(v) for v in self.vocab]

    @classmethod
    def fit(
        cls,
        numeric_values: np.ndarray,
        categorical_values: Sequence[Sequence[str | None]],
        *,
        numeric: list[str],
        categorical: list[str],
    ) -> TabularStats:
        """Fit on the training rows (float64 statistics of values within the float32 range cannot overflow).

        Args:
            numeric_values: ``(N_train, len(numeric))`` float, NaN where missing.
            categorical_values: ``N_train`` rows of ``len(categorical)`` category keys (``None`` where missing).
        """
        mean, std = [], []
        for j in range(len(numeric)):
            column = numeric_values[:, j]
            column = column[~np.isnan(column)]
            m = float(column.mean()) if column.size else 0.0
            s = float(column.std()) if column.size else 1.0
            constant = not s > _RELATIVE_SPREAD * float(np.abs(column).max(initial=0.0))
            mean.append(m)
            std.append(1.0 if constant or not math.isfinite(s) else s)
        vocab = []
        for k in range(len(categorical)):
            seen = {row[k] for row in categorical_values if row[k] is not None}
            vocab.append(sorted(seen))
        return cls(numeric=list(numeric), categorical=list(categorical), mean=mean, std=std, vocab=vocab)

    def encode(
        self, numeric_values: np.ndarray, categorical_values: Sequence[Sequence[str | None]]
    ) -> dict[str, np.ndarray]:
        """Encode rows of any split → ``numeric`` (N, Nn) float32, ``numeric_missing`` (N, Nn) bool,
        ``categorical`` (N, Nc) int64."""
        n = len(categorical_values) if self.categorical else numeric_values.shape[0]
        missing = np.isnan(numeric_values) if self.numeric else np.zeros((n, 0), dtype=bool)
        if self.numeric:
            normalised = (numeric_values - np.asarray(self.mean)) / np.asarray(self.std)
            normalised = np.where(missing, 0.0, normalised).astype(np.float32)
        else:
            normalised = np.zeros((n, 0), dtype=np.float32)
        lookups = [{value: i + 1 for i, value in enumerate(v)} for v in self.vocab]
        codes = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for i, row in enumerate(categorical_values):
            for k, lookup in enumerate(lookups):
                codes[i, k] = lookup.get(row[k], 0) if row[k] is not None else 0
        return {"numeric": normalised, "numeric_missing": missing, "categorical": codes}
