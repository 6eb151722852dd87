"""Tabular columns: ``numeric`` and ``categorical`` lists of manifest columns per modality, encoded with training-split
statistics (:class:`mmfw.data.tabular.TabularStats`) to ``{"numeric": (N,) float, "numeric_missing": (N,) bool,
"categorical": (C,) long}``. A row with no value at all is a missing modality."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmfw.data.manifest.codecs.base import ColumnCodec
from mmfw.data.manifest.reader import FLOAT32_MAX, RowProblem, feature_number, is_missing, scalar
from mmfw.data.manifest.targets import note_merged_spellings
from mmfw.data.tabular import TabularStats, category_key


class Codec(ColumnCodec):
    kind = "tabular"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stats: dict[str, TabularStats] = {}

    @classmethod
    def check_spec(cls, key: str, spec: dict[str, Any]) -> dict[str, Any]:
        """``{kind: tabular, numeric: [names], categorical: [names]}``, at least one name."""
        extra = set(spec) - {"kind", "numeric", "categorical"}
        if extra:
            raise ValueError(
                f"{key} has unknown key(s) {sorted(extra)}; a tabular entry takes ['categorical', 'kind', 'numeric']"
            )
        spec = {"kind": "tabular", "numeric": list(spec.get("numeric") or []),
                "categorical": list(spec.get("categorical") or [])}  # fmt: skip
        if not spec["numeric"] and not spec["categorical"]:
            raise ValueError(f"{key} needs `numeric` and/or `categorical` column lists")
        return spec

    @staticmethod
    def columns(spec: dict[str, Any]) -> list[str]:
        return [*spec["numeric"], *spec["categorical"]]

    def decode(self, record: dict[str, Any], spec: dict[str, Any]) -> tuple[list[float], list[str | None]] | None:
        numeric = []
        for column in spec["numeric"]:
            value = record.get(column)
            numeric.append(math.nan if is_missing(value) else feature_number(value, column, "numeric column"))
        categorical = [None if is_missing(record.get(c)) else category_key(scalar(record.get(c), c))
                       for c in spec["categorical"]]  # fmt: skip
        if all(math.isnan(x) for x in numeric) and all(c is None for c in categorical):
            return None
        return numeric, categorical

    def log_values(self, records: Sequence[dict[str, Any]], rows: Sequence[int]) -> None:
        for spec in self.specs.values():
            for column in spec["categorical"]:
                cells = (records[i].get(column) for i in rows)
                note_merged_spellings(column, "category", (x for x in cells if not is_missing(x)))

    def _numeric(self, modality: str, rows: list[Any]) -> np.ndarray:
        return np.array([r[0] for r in rows], dtype=np.float64).reshape(len(rows), len(self.specs[modality]["numeric"]))

    def fit(self, values: dict[str, list[Any]], train: Sequence[int]) -> None:
        for m, spec in self.specs.items():
            rows = [values[m][i] for i in train if values[m][i] is not None]
            self.stats[m] = TabularStats.fit(self._numeric(m, rows), [r[1] for r in rows], numeric=spec["numeric"],
                                             categorical=spec["categorical"])  # fmt: skip

    def bad_rows(self, values: dict[str, list[Any]], rows: Sequence[int]) -> list[tuple[int, RowProblem]]:
        """Rows whose standardised numeric value ``(x - mean) / std`` does not fit the float32 the model takes (a
        val/test value many training stds away; train values stay within sqrt(n) stds)."""
        found = []
        for m, spec in self.specs.items():
            if not spec["numeric"]:
                continue
            present = [i for i in rows if values[m][i] is not None]
            x = self._numeric(m, [values[m][i] for i in present])
            mean, std = np.asarray(self.stats[m].mean), np.asarray(self.stats[m].std)
            z = (x - mean) / std
            for k, j in zip(*np.nonzero(np.abs(z) > FLOAT32_MAX), strict=True):  # a missing value (NaN) is not
                reason = (f"the value {x[k, j]:.6g} standardises to {z[k, j]:.3g} (training mean {mean[j]:.6g}, std "
                          f"{std[j]:.6g}), beyond the float32 range the model computes in; fix the value or rescale "
                          "the column (e.g. take its log)")  # fmt: skip
                found.append((present[k], RowProblem(spec["numeric"][j], reason)))
        return found

    def state(self) -> dict[str, dict[str, Any]]:
        return {m: vars(s) for m, s in self.stats.items()}

    def restore(self, state: dict[str, dict[str, Any]]) -> None:
        self.stats = {m: TabularStats(**s) for m, s in state.items()}

    def assemble(self, modality: str, column: list[Any]) -> tuple[dict[str, torch.Tensor], None]:
        spec = self.specs[modality]
        blank = (np.full(len(spec["numeric"]), np.nan), [None] * len(spec["categorical"]))
        filled = [v if v is not None else blank for v in column]
        encoded = self.stats[modality].encode(self._numeric(modality, filled), [v[1] for v in filled])
        encoded["numeric_missing"][np.array([v is None for v in column], dtype=bool)] = (
            False  # masked as a whole instead
        )
        return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in encoded.items()}, None

    def encoder_inputs(self, modality: str) -> dict[str, Any]:
        spec = self.specs[modality]
        return {"num_numeric": len(spec["numeric"]), "cardinalities": self.stats[modality].cardinalities}
