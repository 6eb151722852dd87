"""Tabular value drop: each cell of a row is set missing independently with probability ``p``, encoded exactly as the
datamodule encodes a missing cell: a numeric value becomes 0 with its ``numeric_missing`` flag set, a categorical
value becomes the unknown/missing bucket 0. A row that loses every cell is a missing modality (mask bit False,
zeros), as a row with no values is in a manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mmfw.contracts import MASK_KEY
from mmfw.robustness._common import check_levels, column, modality_seed, split_batches


class TabularValueDrop:
    """Set a share ``p`` of the values of a tabular modality missing.

    Cell ``(i, k)`` is dropped when ``u_ik < p``, ``u ~ U(0, 1)`` drawn in the same order at every level (seeded
    by ``seed`` and the modality name), so a higher ``p`` drops a superset of the cells.

    Args:
        levels: shares of values dropped, increasing, in (0, 1].
    """

    kind = "tabular"
    name = "value_drop"
    clean_level = 0.0
    level_label = "share of values set missing"

    def __init__(self, *, levels: Sequence[float]) -> None:
        self.levels = check_levels(levels, "TabularValueDrop.levels", above=0.0, at_most=1.0)

    def batches(self, datamodule: Any, split: str, modality: str, level: float, seed: int) -> Iterator[dict[str, Any]]:
        """The split's batches with a share ``level`` of ``modality``'s values set missing."""
        j = column(datamodule, modality)
        generator = torch.Generator().manual_seed(modality_seed(seed, modality))
        for batch in split_batches(datamodule, split):
            table, mask = drop_values(batch[modality], batch[MASK_KEY][:, j], level, generator)
            new_mask = batch[MASK_KEY].clone()
            new_mask[:, j] = mask
            yield {**batch, modality: table, MASK_KEY: new_mask}


def drop_values(
    table: dict[str, torch.Tensor], present: torch.Tensor, share: float, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Drop each cell of ``{"numeric": (B, N), "numeric_missing": (B, N), "categorical": (B, C)}`` with
    probability ``share``; returns the new table and the new presence ``(B,)`` (False where every cell dropped)."""
    numeric, categorical = table.get("numeric"), table.get("categorical")
    n = numeric.shape[1] if numeric is not None else 0
    c = categorical.shape[1] if categorical is not None else 0
    batch = (numeric if numeric is not None else categorical).shape[0]
    drop = torch.rand((batch, n + c), generator=generator) < share  # (B, N + C), drawn for every row
    drop &= present[:, None]  # an already missing row stays as the datamodule encoded it
    out = dict(table)
    if n:
        out["numeric"] = numeric.masked_fill(drop[:, :n], 0.0)
        missing = table.get("numeric_missing", torch.zeros_like(drop[:, :n]))
        out["numeric_missing"] = missing | drop[:, :n]
    if c:
        out["categorical"] = categorical.masked_fill(drop[:, n:], 0)
    emptied = drop.all(dim=1) & present
    present = present & ~emptied
    for key, value in out.items():  # a missing modality is all zeros
        out[key] = value.masked_fill(emptied.reshape(-1, *([1] * (value.dim() - 1))), 0)
    return out, present
