"""``encoder.<modality>.init_from=<run folder>``: start an encoder from the weights another run trained.

The typical use: align encoders with ``objective=contrastive``, then train a fusion classifier (or a linear probe,
with ``encoder.<modality>.frozen=true``) from them. Only that encoder's weights are read, from the run's best
checkpoint, as data (``weights_only``); the rest of the model starts as configured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from mmfw.runs import run_folder

log = logging.getLogger(__name__)

# Keys of an encoder's config that say how it is trained or started, not what it is.
NOT_ARCHITECTURE = ("frozen", "init_from")


class InitFromError(ValueError):
    """An ``init_from`` run that cannot give this encoder its weights; the message names the key to change."""


def load_encoder_weights(encoder: nn.Module, modality: str, run_dir: str | Path, config: dict[str, Any]) -> Path:
    """Load ``encoders.<modality>.*`` of ``run_dir``'s best checkpoint into ``encoder``; returns the checkpoint.

    ``config`` is this run's resolved ``encoder.<modality>``; the run's own must be the same architecture (equal
    but for ``frozen`` and ``init_from``), else the error names the first key that differs.
    """
    key = f"encoder.{modality}.init_from"
    try:
        run_dir = run_folder.check_run_folder(run_dir, key=key)
    except run_folder.NotARunFolderError as error:
        raise InitFromError(str(error)) from None
    resolved = run_dir / run_folder.RESOLVED_CONFIG
    theirs = OmegaConf.select(OmegaConf.load(resolved), f"encoder.{modality}") if resolved.is_file() else None
    if theirs is None:
        raise InitFromError(f"{key}={run_dir}: that run has no `encoder.{modality}` (in {resolved}); the modality "
                            "names must match")  # fmt: skip
    theirs = OmegaConf.to_container(theirs, resolve=True)
    for name in sorted(set(theirs) | set(config)):
        if name in NOT_ARCHITECTURE:
            continue
        if theirs.get(name) != config.get(name):
            raise InitFromError(
                f"{key}={run_dir}: encoder.{modality}.{name} is {config.get(name)!r} here but "
                f"{theirs.get(name)!r} in that run; configure the same encoder (e.g. encoder.{modality}.{name}="
                f"{theirs.get(name)!r}) to start from its weights"
            )
    checkpoint, note = run_folder.best_checkpoint(run_dir)
    if note:
        log.warning("%s: %s", key, note)
    prefix = f"encoders.{modality}."
    state = run_folder.load_checkpoint(checkpoint)["state_dict"]
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise InitFromError(f"{key}={run_dir}: checkpoint {checkpoint} holds no `{prefix}*` weights")
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as error:  # same config, other data-dependent sizes (vocabulary, channels)
        raise InitFromError(f"{key}={run_dir}: the weights of {checkpoint} do not fit this encoder: {error}") from None
    log.info("%s: %d tensors loaded from %s", key, len(weights), checkpoint)
    return checkpoint
