"""Gated Multimodal Unit (Arevalo et al., 2017, arXiv:1702.01992) for M modalities:
``h_m = tanh(W_m x_m)``, ``z = softmax_m(W_z [x_1; ...; x_M])`` per unit, ``h = Σ_m z_m ⊙ h_m``.

For M = 2 the softmax equals the paper's sigmoid gate ``z ⊙ h_1 + (1 - z) ⊙ h_2``. A missing modality gets gate 0
(the softmax runs over the present ones) and its input is zeroed in ``[x_1; ...; x_M]``; all missing → ``h = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, masked_softmax, zero_missing


class GatedFusion(nn.Module):
    """Generalised GMU: per hidden unit, a softmax over modalities mixes ``tanh`` projections of each modality.

    Token features ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        out_dim: hidden width of ``h_m`` and of the output.
        dropout: dropout on the output.

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, M)``; output: ``(B, out_dim)``.
    """

    outputs_logits = False

    def __init__(self, in_dims: dict[str, int], *, out_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.names = list(in_dims)
        self.out_dim = out_dim
        # bias-free as in the paper: h_m = tanh(W_m x_m)
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim, bias=False) for m, d in in_dims.items()})
        self.gate = nn.Linear(sum(in_dims.values()), len(in_dims) * out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        x = [zero_missing(as_vector(features[m]), mask[:, j]) for j, m in enumerate(self.names)]
        h = torch.stack([torch.tanh(self.proj[m](xm)) for m, xm in zip(self.names, x)], dim=1)  # (B, M, out_dim)
        scores = self.gate(torch.cat(x, dim=-1)).view(-1, len(self.names), self.out_dim)  # (B, M, out_dim)
        z = masked_softmax(scores, mask.unsqueeze(-1).expand_as(scores), dim=1)
        return self.dropout((z * h).sum(dim=1))
