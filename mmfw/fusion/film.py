"""FiLM (Perez et al., 2018, arXiv:1709.07871): the conditioning modality ``c`` gives ``γ = 1 + Δγ(x_c)``, ``β(x_c)``
that modulate the others: ``h = ReLU(γ ⊙ mean_{m ≠ c present} W_m x_m + β)``.

Missing conditioner → identity modulation (``γ = 1, β = 0``); no other modality present → the mean is 0 and
``h = ReLU(β)`` keeps the conditioner's information. Needs at least one modality besides the conditioner.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, zero_missing


class FiLMFusion(nn.Module):
    """Feature-wise linear modulation of the other modalities' projected (mean-pooled) features by one modality.

    Token features ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        conditioning: the modality that produces ``γ, β``; ``None`` = the first modality of ``in_dims``.
        out_dim: width of the modulated features and of the output.
        dropout: dropout on the output.

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, M)``; output: ``(B, out_dim)``.
    """

    outputs_logits = False

    def __init__(
        self, in_dims: dict[str, int], *, conditioning: str | None = None, out_dim: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.names = list(in_dims)
        self.conditioning = self.names[0] if conditioning is None else conditioning
        if self.conditioning not in in_dims:
            raise ValueError(
                f"fusion.conditioning={self.conditioning!r} is not one of the modalities {self.names}; "
                "set fusion.conditioning to one of them"
            )
        if len(in_dims) < 2:
            raise ValueError(
                f"fusion=film needs a modality to modulate besides the conditioner {self.conditioning!r}, "
                f"but modalities={self.names}; use another fusion (e.g. fusion=concat) for a single modality"
            )
        self.out_dim = out_dim
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in in_dims.items() if m != self.conditioning})
        self.film = nn.Linear(in_dims[self.conditioning], 2 * out_dim)
        # zero init: training starts from the identity modulation (γ = 1, β = 0), as FiLM's residual form intends
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        h, count = 0, 0
        for j, m in enumerate(self.names):
            if m != self.conditioning:
                h = h + zero_missing(self.proj[m](as_vector(features[m])), mask[:, j])  # (B, out_dim)
                count = count + mask[:, j : j + 1].to(h.dtype)
        h = h / count.clamp(min=1)
        c = self.names.index(self.conditioning)
        x_c = zero_missing(as_vector(features[self.conditioning]), mask[:, c])
        delta_gamma, beta = zero_missing(self.film(x_c), mask[:, c]).chunk(2, dim=-1)
        return self.dropout(torch.relu((1 + delta_gamma) * h + beta))
