"""Low-rank Multimodal Fusion (Liu et al., 2018, arXiv:1806.00064): ``h = Σ_r w_r ∘_m (W_m^{(r)} [1; f_m]) + b``.

Equals Tensor Fusion with the rank-``r`` weight ``W = Σ_r w_r ⊗_m W_m^{(r)}`` without building the tensor. A missing
modality has ``f_m := 0``, so its factor reduces to the row ``W_m^{(r)}[0]`` applied to the constant 1, as in Tensor
Fusion. The factors are registered ``nn.Parameter``s (the reference code's factors famously missed the optimizer).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, zero_missing


class LowRankFusion(nn.Module):
    """Rank-``rank`` factorised tensor fusion over the (mask-zeroed) modality features ``f_m = x_m``.

    Token features ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        rank: number of rank-one terms ``r``.
        out_dim: width of the output ``h``.
        dropout: dropout on the output.

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, M)``; output: ``(B, out_dim)``.
        ``factors[m]``: ``(rank, D_m + 1, out_dim)``; ``fusion_weights``: ``(rank,)``; ``bias``: ``(out_dim,)``.
    """

    outputs_logits = False

    def __init__(self, in_dims: dict[str, int], *, rank: int = 4, out_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"fusion.rank must be >= 1, got {rank}")
        self.names = list(in_dims)
        self.out_dim = out_dim
        # std 1/sqrt(D+1) keeps each factor's output at the input's scale, so the product over M stays O(1)
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(rank, d + 1, out_dim) / math.sqrt(d + 1)) for m, d in in_dims.items()}
        )
        self.fusion_weights = nn.Parameter(torch.full((rank,), 1.0 / math.sqrt(rank)))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        prod = None
        for j, m in enumerate(self.names):
            f = zero_missing(as_vector(features[m]), mask[:, j])
            f1 = torch.cat([torch.ones_like(f[:, :1]), f], dim=-1)  # (B, D_m + 1)
            fm = torch.einsum("bd,rdo->bro", f1, self.factors[m])  # (B, rank, out_dim)
            prod = fm if prod is None else prod * fm
        h = torch.einsum("bro,r->bo", prod, self.fusion_weights) + self.bias
        return self.dropout(h)
