"""Tensor Fusion (Zadeh et al., 2017, arXiv:1707.07250): ``z = vec(⊗_m [1; f_m])``, ``f_m = ReLU(W_m x_m)``,
``h = MLP(z)``; ``z`` has ``Π_m (proj_dim + 1)`` entries, so keep ``proj_dim`` small.

A missing modality has ``f_m := 0``: its factor ``[1; 0]`` keeps every term that does not involve it (the unimodal
and cross terms of the present modalities) and zeroes the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, zero_missing


class TensorFusion(nn.Module):
    """Outer product of ``[1; f_m]`` over all modalities, flattened, then Linear → ReLU → Dropout.

    Token features ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        proj_dim: width of each ``f_m``; the tensor has ``(proj_dim + 1) ** M`` entries.
        out_dim: width of the output.
        dropout: dropout after the MLP.

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, M)``; output: ``(B, out_dim)``.
    """

    outputs_logits = False

    def __init__(self, in_dims: dict[str, int], *, proj_dim: int = 8, out_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.names = list(in_dims)
        self.out_dim = out_dim
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, proj_dim), nn.ReLU()) for m, d in in_dims.items()})
        self.tensor_dim = (proj_dim + 1) ** len(in_dims)
        self.mlp = nn.Sequential(nn.Linear(self.tensor_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def fused_tensor(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        """``vec(⊗_m [1; f_m])`` of shape ``(B, Π_m (proj_dim + 1))``; the first modality varies slowest."""
        check_inputs(self.names, features, mask)
        z = None
        for j, m in enumerate(self.names):
            f = zero_missing(self.proj[m](as_vector(features[m])), mask[:, j])
            f1 = torch.cat([torch.ones_like(f[:, :1]), f], dim=-1)  # (B, proj_dim + 1)
            z = f1 if z is None else (z.unsqueeze(-1) * f1.unsqueeze(1)).flatten(1)
        return z

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        return self.mlp(self.fused_tensor(features, mask))
