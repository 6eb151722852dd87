"""mmfw: config-driven experiments for multimodal deep learning (Hydra + PyTorch Lightning + W&B).

``mmfw.load_run(path)`` gives a trained run's model and preprocessing (:mod:`mmfw.runs.load`). It is imported on first
use, so that ``import mmfw`` (and every console script's ``--help``) loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmfw.runs.load import load_run

__all__ = ["load_run"]


def __getattr__(name: str) -> Any:
    if name == "load_run":
        from mmfw.runs.load import load_run

        return load_run
    raise AttributeError(f"module 'mmfw' has no attribute {name!r}")
