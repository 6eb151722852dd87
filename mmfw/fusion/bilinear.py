"""Multi-modal factorized bilinear pooling (MFB, Yu et al., 2017, arXiv:1708.01471) for two modalities:
``z = SumPool_k(U x ⊙ V y)``, then power (signed sqrt) and L2 normalisation.

A missing modality's projection is replaced by ones, the neutral element of ``⊙``: ``z`` then pools the present
modality's projection alone; with both missing ``z`` is a constant. Defined for exactly two modalities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, zero_missing

_EPS = 1e-8


class BilinearFusion(nn.Module):
    """Low-rank bilinear pooling of two modalities with factor ``k`` (``U, V: D -> k * out_dim``).

    Token features ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width of exactly two modalities; its order is the mask's column order.
        out_dim: width of the pooled output.
        factor: ``k``, the rank of each output unit's bilinear form.
        dropout: dropout on the product ``U x ⊙ V y`` (as in MFB).

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, 2)``; output: ``(B, out_dim)``, unit L2 norm.
    """

    outputs_logits = False

    def __init__(self, in_dims: dict[str, int], *, out_dim: int = 256, factor: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        if len(in_dims) != 2:
            raise ValueError(
                f"fusion=bilinear is defined for exactly two modalities, got modalities={list(in_dims)}; "
                "set `modalities` to two entries or pick another fusion (e.g. fusion=lowrank or fusion=tensor)"
            )
        self.names = list(in_dims)
        self.out_dim = out_dim
        self.factor = factor
        self.proj = nn.ModuleDict({m: nn.Linear(d, factor * out_dim) for m, d in in_dims.items()})
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        p, q = (
            torch.where(mask[:, j : j + 1], self.proj[m](zero_missing(as_vector(features[m]), mask[:, j])), 1.0)
            for j, m in enumerate(self.names)
        )  # (B, k * out_dim) each
        z = self.dropout(p * q).view(-1, self.out_dim, self.factor).sum(dim=-1)  # (B, out_dim)
        # signed sqrt in float32 (eps underflows in fp16), shifted by sqrt(eps): continuous, finite gradient at 0
        z = z.float()
        z = torch.sign(z) * (torch.sqrt(z.abs() + _EPS) - _EPS**0.5)
        return F.normalize(z, dim=-1)
