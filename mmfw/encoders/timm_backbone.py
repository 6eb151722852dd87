"""Any timm model as an encoder: ``timm.create_model(name, pretrained, num_classes=0, in_chans)`` returns pooled
features ``(B, num_features)``; works for images and, with ``in_chans=1``, for log-mel spectrograms."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


class TimmEncoder(nn.Module):
    """A timm backbone without its classifier.

    Args:
        model_name: any name from ``timm.list_models()``, e.g. ``resnet18``.
        in_chans: input channels; filled in from the datamodule. timm adapts pretrained stem weights.
        pretrained: load pretrained weights (from ``checkpoint_path`` when given, else the timm hub).
        checkpoint_path: local weights file (``.safetensors``/``.pth``/``.bin``) for machines with no hub access.
        drop_rate: dropout before the (removed) classifier, passed to timm.
    """

    returns_tokens = False

    def __init__(
        self,
        model_name: str,
        in_chans: int = 3,
        *,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if checkpoint_path is not None and not pretrained:
            raise ValueError(f"checkpoint_path={checkpoint_path!r} is given but pretrained=false: set pretrained=true")
        overlay = None
        if checkpoint_path is not None:
            if not Path(checkpoint_path).is_file():
                raise FileNotFoundError(
                    f"encoder checkpoint_path {checkpoint_path!r} does not exist: point "
                    "encoder.<modality>.checkpoint_path at a local timm weights file"
                )
            overlay = {"file": str(Path(checkpoint_path).resolve())}
        self.backbone = timm.create_model(
            model_name,
            pretrained=pretrained,
            num_classes=0,
            in_chans=in_chans,
            drop_rate=drop_rate,
            pretrained_cfg_overlay=overlay,
        )
        self.out_dim = int(self.backbone.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, out_dim)``."""
        return self.backbone(x)
