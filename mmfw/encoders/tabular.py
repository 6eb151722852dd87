"""MLP over a table row: ``h = W₂ · Dropout(GELU(W₁ [x_num ; m_num ; E_1[c_1] ; … ; E_C[c_C]]))``.

``x_num`` are normalised numeric features (0 where missing), ``m_num`` their missing indicators and ``E_k`` one
embedding table per categorical column with ``cardinality + 1`` rows, row 0 being the unknown/missing bucket.

The tables start near zero (``E_k ~ N(0, init_std²)``, ``init_std`` 0.01): a category seen in a handful of training
rows then stays close to "no effect" unless the data moves it, as a regularised one-hot model would treat it, where
N(0, 1) rows give every rare category a large random effect (drug reviews, 474 drugs in 480 training rows: val
AUROC 0.819 ± 0.005 vs 0.805 ± 0.021 over 3 seeds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TabularMLPEncoder(nn.Module):
    """Embeds categorical columns, concatenates them with the numeric ones, and applies a two-layer MLP.

    Args:
        num_numeric: numeric columns ``N``; filled in from the datamodule (``encoder_inputs``).
        cardinalities: known categories per categorical column (without the unknown bucket); from the datamodule.
        embed_dim: width of each categorical embedding.
        hidden_dim: hidden width of the MLP.
        out_dim: feature size handed to the fusion.
        dropout: dropout after the hidden layer.
        init_std: standard deviation of the initial categorical embeddings (see the module docstring).
    """

    returns_tokens = False

    def __init__(
        self,
        num_numeric: int,
        cardinalities: Sequence[int],
        *,
        embed_dim: int = 8,
        hidden_dim: int = 64,
        out_dim: int = 64,
        dropout: float = 0.1,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if num_numeric == 0 and not cardinalities:
            raise ValueError("a tabular encoder needs at least one numeric or categorical column")
        self.num_numeric, self.cardinalities, self.out_dim = num_numeric, [int(c) for c in cardinalities], out_dim
        self.embeddings = nn.ModuleList(nn.Embedding(c + 1, embed_dim) for c in self.cardinalities)
        for table in self.embeddings:
            nn.init.normal_(table.weight, std=init_std)
        in_features = 2 * num_numeric + embed_dim * len(self.cardinalities)
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{"numeric": (B, N) float, "numeric_missing": (B, N) bool (optional), "categorical": (B, C) long}``
        → ``(B, out_dim)``."""
        parts = []
        if self.num_numeric:
            numeric = x["numeric"]
            missing = x.get("numeric_missing")
            missing = torch.zeros_like(numeric) if missing is None else missing.to(numeric.dtype)
            parts += [numeric, missing]
        if self.cardinalities:
            codes = x["categorical"]
            for k, (table, cardinality) in enumerate(zip(self.embeddings, self.cardinalities, strict=True)):
                column = codes[:, k]
                # an id outside the training vocabulary (e.g. data encoded elsewhere) falls into the unknown bucket
                column = torch.where((column >= 0) & (column <= cardinality), column, torch.zeros_like(column))
                parts.append(table(column))
        return self.mlp(torch.cat(parts, dim=-1))
