"""W&B that never prompts: online with an API key, offline (files in the run folder, ``wandb sync`` later) without."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def wandb_credentials_available() -> bool:
    """True when an API key is in the environment or in ~/.netrc (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def wandb_logger(
    *,
    project: str,
    save_dir: str,
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    log_model: bool = False,
    resumed_from: str | None = None,
    segment: int = 0,
) -> WandbLogger:
    """A ``WandbLogger`` writing under ``save_dir``.

    A training run resumed from its folder logs to a new W&B run (a new id, the same group and name) rather than
    continuing the old id: wandb cannot resume an offline run (``wandb sync`` of a second offline run with the same
    id overwrites the first), and a resumed run trains again the part of an epoch after its checkpoint, whose steps
    one W&B history could only log twice. The segments line up on the ``trainer/global_step`` axis.

    Args:
        offline: ``None`` decides by itself: offline when ``WANDB_MODE`` is ``offline``/``disabled`` or when no
            API key is configured, so a run never stops at a login prompt.
        resumed_from: the W&B run id of the previous segment of this training run; written to the W&B config
            (``resumed_from``, ``segment``) so the dashboard can join the segments.
        segment: how many segments came before this one (0 for a run that was not resumed).
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or not wandb_credentials_available()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # wandb reads these instead of asking on the terminal.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    extra = {"config": {"resumed_from": resumed_from, "segment": segment}} if resumed_from else {}
    return WandbLogger(
        project=project,
        entity=entity,
        save_dir=save_dir,
        group=group,
        name=name,
        tags=list(tags) if tags else None,
        offline=offline,
        log_model=log_model,
        **extra,
    )


@rank_zero_only
def finish_wandb(loggers: list, *, failed: bool) -> None:
    """End this process's W&B run (marked failed or finished).

    Lightning leaves the run open, and the next ``WandbLogger`` in the same process would log into it: the jobs of
    a multirun run one after another in one process, and each must be its own W&B run.
    """
    for logger in loggers:
        run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
        if run is not None:
            try:
                run.finish(exit_code=1 if failed else 0)
            except Exception as error:  # a logging problem must not hide how the run itself ended
                log.warning("Could not finish the W&B run %s: %s", run.id, error)
