"""LeNet-style CNN encoder for small 2D inputs: MNIST digits ``(B, 1, 28, 28)`` or log-mel spectrograms
``(B, 1, n_mels, frames)``; the encoder the AV-MNIST literature (CentralNet, MultiBench) uses for both.

    x -> [Conv3x3 -> BN -> ReLU -> MaxPool2]*len(channels) -> global average pool -> Linear -> (B, out_dim)

With ``returns_tokens`` the pooling is skipped and every position of the last feature map becomes a token:
``(B, H' * W', out_dim)``, for fusions that attend over tokens (attention, cross_attention).
"""

from __future__ import annotations

import torch
from torch import nn


class LeNetEncoder(nn.Module):
    """Small CNN; global pooling makes it work for any input height and width.

    Args:
        in_chans: input channels (1 for MNIST and spectrograms); filled in from the datamodule.
        channels: output channels of each conv stage.
        out_dim: feature size.
        dropout: dropout before the projection.
        returns_tokens: return one token per position of the last feature map instead of the pooled vector.
    """

    def __init__(
        self,
        in_chans: int = 1,
        *,
        channels: tuple[int, ...] = (16, 32, 64),
        out_dim: int = 64,
        dropout: float = 0.0,
        returns_tokens: bool = False,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        prev = in_chans
        for width in channels:
            stages += [
                nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            prev = width
        self.features = nn.Sequential(*stages)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(prev, out_dim), nn.ReLU(inplace=True))
        self.out_dim = out_dim
        self.returns_tokens = returns_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, out_dim)``, or ``(B, H' * W', out_dim)`` with ``returns_tokens``."""
        x = self.features(x)  # (B, channels[-1], H', W')
        if self.returns_tokens:
            return self.proj(x.flatten(2).transpose(1, 2))  # (B, H'W', out_dim)
        return self.proj(x.mean(dim=(2, 3)))
