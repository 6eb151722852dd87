"""Image decoding for the datamodules: any file Pillow reads → uint8 ``(C, H, W)`` in a fixed mode and size.

Alpha (RGBA, LA, palette images with transparency) is composited over black, so transparent pixels read as
background the way MNIST-style digits expect; EXIF orientation is applied. ``to_float`` scales to [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageMode = Literal["L", "RGB"]


def load_image(path: str | Path, *, mode: ImageMode, size: int | tuple[int, int]) -> np.ndarray:
    """Decode, convert and resize one image → ``(C, H, W)`` uint8 with ``C = 1`` (``L``) or 3 (``RGB``).

    Args:
        path: the image file.
        mode: ``L`` (grey) or ``RGB``.
        size: output side ``S`` (square ``S x S``) or ``(H, W)``; resized with bilinear filtering (plus
            antialiasing when shrinking).

    Raises:
        ValueError: the file is missing, truncated or not an image; the message names the file.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"image_mode must be 'L' or 'RGB', got {mode!r}")
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    try:
        with Image.open(path) as img:
            img.load()  # decode now so a truncated file fails here, not later
            img = ImageOps.exif_transpose(img)
            img = _flatten_alpha(img)
            img = img.convert(mode)
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite images with transparency over black; others unchanged."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16/32-bit greyscale: scale the value range to 8 bits instead of letting convert() clip it
        values = np.asarray(img, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
        return Image.fromarray(scaled.round().astype(np.uint8))  # 2-D uint8 -> mode L
    return img


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., C, H, W)`` → float32 in [0, 1]."""
    return image.float().div_(255.0)
