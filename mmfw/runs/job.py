"""One training run from its start to its record: resume, config checks, fit and test (``mmfw.runs.fit``), and
run.json saying how it ended: ``completed``, ``failed`` with the error, or ``interrupted``.

Light at the top: a config error is recorded and raised before torch or Lightning are imported.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmfw.runs import config, resume, run_folder, sweep

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What a run has set up so far: how it stopped is recorded from it, its W&B run closed."""

    trainer: Any = None
    loggers: list[Any] = field(default_factory=list)
    saved: dict[str, Any] | None = None  # the checkpoint's content while the resumed run is being checked


def run(cfg: DictConfig, *, build: Callable[[DictConfig], tuple[Any, Any]]) -> float | None:
    """Fit and test; returns the best value of ``monitor.metric`` (what sweeps optimise).

    Args:
        cfg: the composed config; with ``resume=<run folder>`` the run continues from that folder's last checkpoint.
        build: makes ``(datamodule, model)`` from the config (``mmfw.train.build``).
    """
    run_dir = Path(cfg.paths.output_dir)
    overrides = sweep.task_overrides()
    state, checkpoint = RunState(), None
    if cfg.get("resume"):
        # Outside the try: a resume that cannot start must not mark the run it points at as failed.
        cfg, checkpoint = resume.load_run_to_resume(cfg, overrides)
        if checkpoint is not None:
            state.saved = run_folder.load_checkpoint(checkpoint, mmap=True)  # refuses a file that would run code
    try:
        config.check_overrides(cfg, overrides)
        from mmfw.runs import fit  # torch and Lightning: after the checks, so that a config error answers at once

        score = fit.fit_and_test(cfg, build=build, run_dir=run_dir, checkpoint=checkpoint, state=state)
    except resume.ResumeError:
        raise  # refused before anything in the run folder changed: it keeps its own record
    except BaseException as error:
        record_stop(run_dir, error, state.trainer)
        close_loggers(state.loggers, failed=True)
        if stopped_by_sigterm(error):
            # Lightning's SIGTERMException exits with status 0; a job stopped by its scheduler did not succeed.
            raise SystemExit(128 + signal.SIGTERM) from error
        raise
    close_loggers(state.loggers, failed=False)
    return score


def stopped_by_sigterm(error: BaseException) -> bool:
    """Whether Lightning stopped the run on SIGTERM; Lightning not imported yet means it did not."""
    exceptions = sys.modules.get("pytorch_lightning.utilities.exceptions")
    return exceptions is not None and isinstance(error, exceptions.SIGTERMException)


def is_rank_zero() -> bool:
    """Rank 0 as Lightning knows it once loaded (the trainer sets it), else as the launcher set it."""
    if "pytorch_lightning" in sys.modules:
        from pytorch_lightning.utilities import rank_zero_only

        return rank_zero_only.rank == 0
    return run_folder.launch_rank() == 0


def close_loggers(loggers: list[Any], *, failed: bool) -> None:
    if loggers:  # any logger means Lightning is loaded
        from mmfw.runs.loggers import finish_wandb

        finish_wandb(loggers, failed=failed)


def record_stop(run_dir: Path, error: BaseException, trainer: Any) -> None:
    """Record why the run stopped in run.json: ``interrupted`` (SIGTERM, Ctrl-C) or ``failed`` with the error."""
    if not is_rank_zero():
        return
    step = f" at global step {trainer.global_step}" if trainer is not None else ""
    if stopped_by_sigterm(error) or isinstance(error, KeyboardInterrupt | SystemExit):
        # Lightning turns Ctrl-C into SystemExit(1) after calling the callbacks' on_exception.
        message = f"stopped by {'SIGTERM' if stopped_by_sigterm(error) else 'an interrupt'}{step}"
        last = run_folder.last_checkpoint(run_dir)
        message += f"; continue with: mmfw-train resume={run_dir}" if last else "; no checkpoint was saved"
        run_folder.finish_run(run_dir, status="interrupted", error=message)
    else:
        # A run that failed before it started (a config error) gets a run.json all the same.
        first = {} if run_folder.read_run_json(run_dir) else {"overrides": sweep.task_overrides()}
        run_folder.finish_run(run_dir, status="failed", error=f"{type(error).__name__}: {error}", **first)
