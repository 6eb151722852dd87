"""Small helpers shared by the fusion methods: input checks, token pooling, masking."""

from __future__ import annotations

import torch
from torch import Tensor


def check_inputs(names: list[str], features: dict[str, Tensor], mask: Tensor) -> None:
    """Fail with a readable message when the batch does not match the modalities the fusion was built for."""
    missing = [m for m in names if m not in features]
    if missing:
        raise KeyError(f"fusion was built for modalities {names} but the features lack {missing}")
    if mask.dim() != 2 or mask.shape[1] != len(names):
        raise ValueError(f"mask must be (B, {len(names)}) with columns {names}, got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")


def as_vector(x: Tensor) -> Tensor:
    """``(B, D)`` stays; token features ``(B, T, D)`` are mean-pooled over ``T`` to ``(B, D)``."""
    if x.dim() == 3:
        return x.mean(dim=1)
    if x.dim() != 2:
        raise ValueError(f"fusion features must be (B, D) or (B, T, D), got shape {tuple(x.shape)}")
    return x


def as_tokens(x: Tensor) -> Tensor:
    """``(B, D)`` becomes one token ``(B, 1, D)``; ``(B, T, D)`` stays."""
    if x.dim() == 2:
        return x.unsqueeze(1)
    if x.dim() != 3:
        raise ValueError(f"fusion features must be (B, D) or (B, T, D), got shape {tuple(x.shape)}")
    return x


def zero_missing(x: Tensor, present: Tensor) -> Tensor:
    """Replace the rows of absent samples by zeros. ``present`` is bool ``(B,)``; ``x`` is ``(B, ...)``.

    ``torch.where`` rather than a multiplication: a garbage (even inf/NaN) input of a missing modality must not leak.
    """
    return torch.where(present.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` restricted to ``mask`` (True = keep); all-masked slices give all-zero weights, not NaN."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(scores.dtype)
