"""The one way datamodules turn a split's dataset into a DataLoader."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def split_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of ``dataset``; a shuffled loader draws its order from a generator seeded with ``seed`` (the
    fault-tolerance callback reseeds it from ``(seed, epoch)`` each epoch, so resumed runs see the same order)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
