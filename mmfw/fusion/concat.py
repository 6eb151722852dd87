"""Concatenation (early/intermediate) fusion: ``h = MLP([x_1 ⊙ m_1; ...; x_M ⊙ m_M; m])``.

The common baseline (e.g. Baltrušaitis et al., 2019, "Multimodal Machine Learning: A Survey"). A missing modality's
features are replaced by zeros and, with ``append_mask``, the mask bits ``m`` are appended so the MLP can tell a
missing modality from a present one whose features happen to be near zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, zero_missing


class ConcatFusion(nn.Module):
    """Concatenate the (mask-zeroed) modality features, optionally the mask, and apply an MLP.

    Token features ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        out_dim: width of the fused representation.
        num_layers: Linear → ReLU → Dropout blocks in the MLP (>= 1).
        dropout: dropout probability after each block.
        append_mask: append the ``M`` mask bits to the concatenation.

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, M)``; output: ``(B, out_dim)``.
    """

    outputs_logits = False

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 256,
        num_layers: int = 1,
        dropout: float = 0.1,
        append_mask: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"fusion.num_layers must be >= 1, got {num_layers}")
        self.names = list(in_dims)
        self.append_mask = append_mask
        self.out_dim = out_dim
        width = sum(in_dims.values()) + (len(in_dims) if append_mask else 0)
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [nn.Linear(width, out_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = out_dim
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        parts = [zero_missing(as_vector(features[m]), mask[:, j]) for j, m in enumerate(self.names)]
        if self.append_mask:
            parts.append(mask.to(parts[0].dtype))
        return self.mlp(torch.cat(parts, dim=-1))  # (B, out_dim)
