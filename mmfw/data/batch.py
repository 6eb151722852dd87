"""The batch and task contracts shared by every datamodule, encoder, fusion method and the module.

A batch is a dict: one entry per modality (a tensor, or a dict of tensors for tabular data, batch
first), ``mask`` — a bool tensor ``(B, M)`` whose column ``j`` says whether modality ``modalities[j]``
is present for each sample — and ``target``. Missing data and modality dropout only flip mask bits.
Optionally ``features``: ``{modality: encoder output}`` precomputed for frozen encoders (:mod:`mmfw.feature_cache`),
used by the model instead of running that encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

TaskKind = Literal["multiclass", "binary", "multilabel", "regression"]
MASK_KEY = "mask"
TARGET_KEY = "target"
FEATURES_KEY = "features"


@dataclass(frozen=True)
class TaskSpec:
    """What the model predicts; built by the datamodule from the data, never typed in config.

    ``num_outputs`` is the width of the logits: classes (multiclass), 1 (binary), labels
    (multilabel) or regression targets.
    """

    kind: TaskKind
    num_outputs: int
    class_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in ("multiclass", "binary", "multilabel", "regression"):
            raise ValueError(f"task kind must be multiclass|binary|multilabel|regression, got {self.kind!r}")
        if self.num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {self.num_outputs}")


def drop_modalities(mask: torch.Tensor, modalities: list[str], absent: list[str]) -> torch.Tensor:
    """Return a copy of ``mask`` (B, M) with the columns of the ``absent`` modalities set to False."""
    unknown = sorted(set(absent) - set(modalities))
    if unknown:
        raise KeyError(f"cannot mask out {unknown}: the model's modalities are {modalities}")
    mask = mask.clone()
    for name in absent:
        mask[:, modalities.index(name)] = False
    return mask
