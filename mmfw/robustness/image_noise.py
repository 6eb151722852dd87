"""Gaussian image noise: ``x' = x + σ · s · ε``, ``ε ~ N(0, I)``, applied to the batch tensors the model reads.

``s`` is the standard deviation of the clean split's pixel values (``scale: data``; the level is then a noise-to-
signal amplitude ratio comparable across data sets) or 1 (``scale: absolute``: ``σ`` in the input's own units).
No clipping: the noise is added in the model's input space (AV-digits images are standardised PCA residuals).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mmfw.contracts import MASK_KEY
from mmfw.robustness._common import check_levels, column, modality_seed, split_batches


class GaussianImageNoise:
    """Additive Gaussian noise of increasing standard deviation on an image modality.

    The same ``ε`` is drawn at every level (seeded by ``seed`` and the modality name), so levels differ only in
    ``σ``. Samples whose image is missing (mask bit False) keep their all-zero tensor.

    Args:
        levels: noise standard deviations ``σ``, in increasing order (the clean point ``σ = 0`` is added).
        scale: ``data`` (``σ`` in units of the clean split's pixel std) or ``absolute``.
    """

    kind = "image"
    name = "gaussian_noise"
    clean_level = 0.0

    def __init__(self, *, levels: Sequence[float], scale: str = "data") -> None:
        if scale not in ("data", "absolute"):
            raise ValueError(f"GaussianImageNoise.scale must be 'data' or 'absolute', got {scale!r}")
        self.levels = check_levels(levels, "GaussianImageNoise.levels", above=0.0)
        self.scale = scale
        self.level_label = "noise std" + (" (x pixel std)" if scale == "data" else "")
        self._stds: dict[tuple[int, str, str], tuple[Any, float]] = {}

    def batches(self, datamodule: Any, split: str, modality: str, level: float, seed: int) -> Iterator[dict[str, Any]]:
        """The split's batches with noise of std ``level · s`` on ``modality``."""
        j = column(datamodule, modality)
        std = level * (self.pixel_std(datamodule, split, modality) if self.scale == "data" else 1.0)
        generator = torch.Generator().manual_seed(modality_seed(seed, modality))
        for batch in split_batches(datamodule, split):
            x = batch[modality]
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.dtype)
            present = batch[MASK_KEY][:, j].reshape(-1, *([1] * (x.dim() - 1)))
            yield {**batch, modality: torch.where(present, x + std * noise, x)}

    def pixel_std(self, datamodule: Any, split: str, modality: str) -> float:
        """Standard deviation of all pixel values of the split's present images (computed once)."""
        key = (id(datamodule), split, modality)
        if key not in self._stds or self._stds[key][0] is not datamodule:  # (an id can be reused once freed)
            j = column(datamodule, modality)
            total = total_sq = count = 0.0
            for batch in split_batches(datamodule, split):
                x = batch[modality][batch[MASK_KEY][:, j]].double()
                total, total_sq, count = total + x.sum().item(), total_sq + x.square().sum().item(), count + x.numel()
            if count == 0:
                raise ValueError(f"no {split} sample has modality {modality!r}: nothing to add noise to")
            mean = total / count
            self._stds[key] = (datamodule, max(total_sq / count - mean**2, 0.0) ** 0.5)
        return self._stds[key][1]
