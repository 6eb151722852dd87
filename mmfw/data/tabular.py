"""Tabular encoding with statistics fitted on the training split only.

Numeric column ``j``: ``x' = (x - mean_j) / std_j`` (train mean and population std; std 1 when constant), a
missing value becomes 0 with ``numeric_missing[:, j] = True``. Categorical column ``k``: the train values sorted,
numbered from 1; a value never seen in training, or a missing one, is the unknown bucket 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def category_key(value: object) -> str:
    """The string a categorical value is compared by: ``1``, ``1.0`` and ``"1"`` are one category."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


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
        """Fit on the training rows.

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
            mean.append(m)
            std.append(s if s > 0.0 and math.isfinite(s) else 1.0)
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
