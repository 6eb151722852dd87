"""Helpers the corruptions share: the split's clean loader, per-modality seeds, the mask column of a modality."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SPLITS = ("val", "test")


def split_batches(datamodule: Any, split: str) -> Iterable[dict[str, Any]]:
    """The clean, unshuffled dataloader of ``split`` (``val`` or ``test``)."""
    if split not in SPLITS:
        raise ValueError(f"robustness.split must be one of {list(SPLITS)}, got {split!r}")
    return getattr(datamodule, f"{split}_dataloader")()


def modality_seed(seed: int, modality: str) -> int:
    """A seed for one modality's draws that does not depend on Python's per-process string hashing."""
    return (int(seed) * 1_000_003 + zlib.crc32(modality.encode())) % 2**63


def sample_rng(seed: int, modality: str, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of ``modality``: the same at every level (common random numbers),
    so a more severe level scales the same noise or drops a superset of the same items."""
    return np.random.default_rng([modality_seed(seed, modality), int(index)])


def column(datamodule: Any, modality: str) -> int:
    """The mask column of ``modality``."""
    return list(datamodule.modalities).index(modality)


def check_levels(
    levels: Sequence[float], key: str, *, above: float, at_most: float | None = None, decreasing: bool = False
) -> list[float]:
    """``levels`` as floats, checked: at least one, strictly ordered from mild to severe, in ``(above, at_most]``
    (for ``decreasing`` sweeps such as SNR, the order is reversed and there are no bounds)."""
    levels = [float(x) for x in levels]
    if not levels:
        raise ValueError(f"{key} must list at least one level")
    pairs = list(zip(levels, levels[1:], strict=False))
    if any((b >= a) if decreasing else (b <= a) for a, b in pairs):
        order = "decrease" if decreasing else "increase"
        raise ValueError(f"{key} must {order} from mild to severe, got {levels}")
    if not decreasing and (levels[0] <= above or (at_most is not None and levels[-1] > at_most)):
        bound = f"{at_most}]" if at_most is not None else "inf)"
        raise ValueError(f"{key} must lie in ({above}, {bound} (the clean level {above} is always added), got {levels}")
    return levels
