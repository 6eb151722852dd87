"""Late (decision-level) fusion: ``y = Σ_m w_m m_m f_m(x_m) / Σ_m w_m m_m``, one classifier ``f_m`` per modality.

Averages the per-modality logits over the modalities present (Snoek et al., 2005, "Early versus late fusion in
semantic video analysis"); with ``learned_weights`` the weights are ``softmax`` of learned scores over the present
modalities. A missing modality gets weight 0; a sample with every modality missing gets all-zero logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_vector, check_inputs, masked_softmax, zero_missing


class LateFusion(nn.Module):
    """One linear classifier per modality; logits averaged over the present modalities.

    This fusion outputs logits itself (``outputs_logits = True``): the module adds no head. Token features
    ``(B, T, D_m)`` are mean-pooled over ``T``.

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        num_outputs: logit width (classes, labels or regression targets), passed by the module from the task
            (:func:`mmfw.fusion.factory.build_fusion`).
        learned_weights: learn one score per modality; weights are their softmax over the present modalities.
            Otherwise the present modalities are weighted equally.
        dropout: dropout on the features before each classifier.

    Shapes:
        features: ``{m: (B, D_m) or (B, T, D_m)}``; mask: bool ``(B, M)``; output: ``(B, num_outputs)``.
    """

    outputs_logits = True

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        num_outputs: int,
        learned_weights: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.names = list(in_dims)
        self.out_dim = num_outputs
        self.dropout = nn.Dropout(dropout)
        self.classifiers = nn.ModuleDict({m: nn.Linear(d, num_outputs) for m, d in in_dims.items()})
        # zeros -> equal weights at init; only a Parameter when learned, so nothing unused sits in the optimizer
        self.weight_logits = nn.Parameter(torch.zeros(len(in_dims))) if learned_weights else None

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        logits = []
        for j, m in enumerate(self.names):
            x = zero_missing(as_vector(features[m]), mask[:, j])
            logits.append(zero_missing(self.classifiers[m](self.dropout(x)), mask[:, j]))
        logits = torch.stack(logits, dim=1)  # (B, M, K)
        if self.weight_logits is None:
            weights = mask.to(logits.dtype) / mask.sum(dim=1, keepdim=True).clamp(min=1).to(logits.dtype)
        else:
            weights = masked_softmax(self.weight_logits.expand(mask.shape[0], -1), mask, dim=1)  # (B, M)
        return (weights.unsqueeze(-1) * logits).sum(dim=1)  # (B, K)
