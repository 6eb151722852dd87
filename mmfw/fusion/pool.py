"""Permutation-invariant pooling (DeepSets, Zaheer et al., 2017): ``h = ρ(⊕_{m present} φ_m(x_m))``, ``⊕`` sum/mean.

``φ_m`` projects modality ``m`` to ``out_dim``; a missing modality is left out of the sum (mean: divided by the number
present, at least 1), so a sample with every modality missing gets ``ρ(0)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, zero_missing


class PoolFusion(nn.Module):
    """Project each modality to a shared width, pool over the present ones (sum or mean), then an MLP ``ρ``.

    Token features ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        out_dim: shared width of ``φ_m`` and of the output.
        pooling: ``sum`` (scales with the number of modalities present) or ``mean``.
        dropout: dropout after ``ρ``.

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, M)``; output: ``(B, out_dim)``.
    """

    outputs_logits = False

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 256,
        pooling: Literal["sum", "mean"] = "mean",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if pooling not in ("sum", "mean"):
            raise ValueError(f"fusion.pooling must be 'sum' or 'mean', got {pooling!r}")
        self.names = list(in_dims)
        self.pooling = pooling
        self.out_dim = out_dim
        self.phi = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, out_dim), nn.ReLU()) for m, d in in_dims.items()})
        self.rho = nn.Sequential(nn.Linear(out_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        h = torch.stack(
            [zero_missing(self.phi[m](as_vector(features[m])), mask[:, j]) for j, m in enumerate(self.names)], dim=1
        )  # (B, M, out_dim)
        pooled = h.sum(dim=1)
        if self.pooling == "mean":
            pooled = pooled / mask.sum(dim=1, keepdim=True).clamp(min=1).to(pooled.dtype)
        return self.rho(pooled)
