"""The one way datamodules turn a split's dataset into a DataLoader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from mmfw.contracts import MODALITIES_KEY


class ModalityCollate:
    """``default_collate``, then ``batch["modalities"]``: the names of the mask columns, in order, checked by the
    module where the features meet the mask (a class, not a closure, so worker processes can pickle it)."""

    def __init__(self, modalities: Sequence[str]) -> None:
        self.modalities = tuple(modalities)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(samples)
        batch[MODALITIES_KEY] = self.modalities
        return batch


def split_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    modalities: Sequence[str],
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
        collate_fn=ModalityCollate(modalities),
    )
