"""What a run folder records about itself, so it can be evaluated, resumed or compared from the folder alone.

<run>/.hydra/{config,overrides,hydra}.yaml   composed config and overrides (written by Hydra)
<run>/resolved_config.yaml                   every interpolation resolved, plus the data-derived `data` node
<run>/run.json                               status, git commit, W&B run id, best checkpoint, final metrics
<run>/packages.txt                           installed package versions
<run>/preprocessing.pt                       a manifest run's fitted preprocessing (tokenizer, tabular statistics),
                                             so that mmfw-predict needs no training data
<run>/checkpoints/{epoch_XXX,last}.ckpt      best and last checkpoints (last: what `resume=<run>` continues)
<run>/csv/metrics.csv                        every logged metric
<run>/.disk_reserve                          space kept free while the run is running, for its final record

run.json ``status``: ``running`` -> ``completed`` | ``failed`` (with ``error``) | ``interrupted`` (SIGTERM or Ctrl-C,
after saving a checkpoint). A run killed outright (SIGKILL, a lost node) stays ``running``; resume it all the same.

A folder holds one run: a new run claims its folder by creating run.json exclusively (``ClaimRunFolder``), and
refuses a folder that already holds a run; ``resume=<folder>`` is the way to continue one.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
RESOLVED_CONFIG = "resolved_config.yaml"
PREPROCESSING = "preprocessing.pt"
CHECKPOINT_DIR = "checkpoints"
RESERVE = ".disk_reserve"
# Far more than a final run.json needs; random bytes, so no file system can store it compressed or sparse.
RESERVE_BYTES = 256 * 1024


class NotARunFolderError(FileNotFoundError):
    """The given folder is not an mmfw run folder."""


class RunFolderTakenError(FileExistsError):
    """A new run was given a folder that already holds a run."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be loaded; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds Python objects whose unpickling could run code."""


def git_state(directory: str | Path = ".") -> dict[str, Any]:
    """Repository root, commit hash and whether the work tree had uncommitted changes (``None`` outside a checkout)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "root": git("rev-parse", "--show-toplevel"),
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
    }


def run_git_state() -> dict[str, Any]:
    """The git state of the code that runs (mmfw's package and configs), plus the working directory's under ``cwd``
    when that is another repository (a project that calls mmfw). mmfw-train may be started from anywhere, so the
    working directory alone says nothing about the code."""
    state = git_state(Path(__file__).resolve().parent)
    cwd = git_state(Path.cwd())
    if cwd["root"] is not None and cwd["root"] != state["root"]:
        state["cwd"] = cwd
    return state


def package_versions() -> list[str]:
    """``name==version`` of every installed distribution, sorted."""
    names = {(dist.metadata["Name"] or "?", dist.version) for dist in metadata.distributions()}
    return sorted(f"{name}=={version}" for name, version in names)


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def update_run_json(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``run.json``, written atomically so a crash never leaves half a file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = read_run_json(run_dir) | fields
    tmp = run_dir / f".{RUN_JSON}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        tmp.replace(run_dir / RUN_JSON)
    finally:
        tmp.unlink(missing_ok=True)  # only left when writing failed (a full disk)
    return record


def claim_run_folder(run_dir: str | Path, *, overrides: list[str]) -> None:
    """Take ``run_dir`` for a new run; raise ``RunFolderTakenError`` if it already holds one.

    run.json is created with ``O_EXCL``, so of two runs started on the same folder exactly one gets it. A folder with
    a ``.hydra/config.yaml`` but no run.json (a run stopped before it recorded itself) holds a run too.
    """
    run_dir = Path(run_dir)
    taken = RunFolderTakenError(
        f"hydra.run.dir={run_dir} already holds a run: a new run needs a folder of its own (leave hydra.run.dir "
        f"unset for a fresh one). To continue that run: mmfw-train resume={run_dir}"
    )
    if (run_dir / HYDRA_CONFIG).exists():
        raise taken
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(run_dir / RUN_JSON, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise taken from None
    record = {"status": "running", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "overrides": list(overrides)}
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")


def launch_rank() -> int:
    """This process's rank as its launcher set it (Lightning's DDP launcher, torchrun, srun, jsrun), 0 otherwise.

    The environment variables Lightning's ``rank_zero_only`` reads, without importing Lightning: run folders are read
    by light commands (mmfw-compare) too.
    """
    keys = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
    return int(next((os.environ[key] for key in keys if os.environ.get(key)), "0"))


class ClaimRunFolder(Callback):
    """Hydra callback (conf/hydra/default.yaml): a single run checks its folder before Hydra writes into it.

    Hydra creates ``hydra.run.dir``, saves ``.hydra/`` and opens the log file there before the task function runs,
    so ``train()`` would be too late: a finished run's config would already be replaced.

    * a new run claims a fresh folder (``claim_run_folder``) and refuses one that holds a run;
    * ``resume=<folder>`` continues in place; a folder that is no run is refused before Hydra creates it;
    * DDP ranks > 0 (started by Lightning with ``hydra.run.dir=<rank 0's folder>``, or by torchrun/srun) join rank 0's
      folder; sweep job folders are handled by ``mmfw.runs.sweep.run_job`` (this hook runs for single runs only).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            if config.get("resume"):
                check_run_folder(config.resume, key="resume")
            elif launch_rank() == 0:
                claim_run_folder(config.hydra.run.dir, overrides=list(config.hydra.overrides.task))
        except (NotARunFolderError, RunFolderTakenError) as error:
            # Hydra turns an exception raised in a callback into a warning and runs the job all the same.
            raise SystemExit(f"{type(error).__name__}: {error}") from error


def reserve_space(run_dir: Path) -> None:
    """Keep ``RESERVE_BYTES`` in the run folder, freed by ``finish_run``: a run that fills the disk can still say so."""
    (run_dir / RESERVE).write_bytes(os.urandom(RESERVE_BYTES))


def start_run(run_dir: str | Path, *, resolved_config_yaml: str, overrides: list[str]) -> None:
    """Record the resolved config, git commit, package versions and command; mark the run ``running``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    reserve_space(run_dir)
    (run_dir / RESOLVED_CONFIG).write_text(resolved_config_yaml)
    (run_dir / "packages.txt").write_text("\n".join(package_versions()) + "\n")
    update_run_json(
        run_dir,
        status="running",
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
        overrides=list(overrides),
        cwd=os.getcwd(),
        git=run_git_state(),
        python=sys.version.split()[0],
    )


def resume_run(
    run_dir: str | Path, *, resolved_config_yaml: str, checkpoint: str | Path | None, overrides: list[str]
) -> None:
    """Mark a run ``running`` again and append this resumption (time, checkpoint, command) to its ``resumes``.

    The resolved config is written again: a resumed run may change plain values such as ``trainer.max_epochs``.
    """
    reserve_space(Path(run_dir))
    (Path(run_dir) / RESOLVED_CONFIG).write_text(resolved_config_yaml)
    record = read_run_json(run_dir)
    entry = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": os.path.relpath(checkpoint, run_dir) if checkpoint else None,
        "previous_status": record.get("status"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "overrides": list(overrides),
        "cwd": os.getcwd(),
        "git": run_git_state(),
    }
    update_run_json(run_dir, status="running", error=None, resumes=[*record.get("resumes", []), entry])


def finish_run(run_dir: str | Path, *, status: str, **fields: Any) -> None:
    """Mark the run ``completed``, ``failed`` or ``interrupted`` (with ``error=...`` when it failed).

    The disk reserve is freed first, so the record is written even when the run failed because the disk is full.
    """
    (Path(run_dir) / RESERVE).unlink(missing_ok=True)
    update_run_json(run_dir, status=status, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)


def check_run_folder(run_dir: str | Path, *, key: str = "run") -> Path:
    """Return ``run_dir`` as a Path, or raise ``NotARunFolderError`` that says what was expected.

    ``key`` is the argument that named the folder (``run`` for mmfw-eval, ``resume`` for mmfw-train).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunFolderError(
            f"{key}={run_dir}: the run folder does not exist. Pass {key}=<folder printed by mmfw-train>, "
            "e.g. logs/train/runs/<time>_<id>"
        )
    if not (run_dir / HYDRA_CONFIG).is_file() or not (run_dir / RUN_JSON).is_file():
        raise NotARunFolderError(
            f"{key}={run_dir} is not an mmfw run folder: it has no {HYDRA_CONFIG} and {RUN_JSON}. "
            f"Pass {key}=<folder> of a training run, e.g. logs/train/runs/<time>_<id> "
            "(for a sweep, one of its numbered job folders)"
        )
    return run_dir


def load_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint as data only (``weights_only=True``): tensors, numbers, strings and containers.

    Unpickling other objects runs code chosen by whoever wrote the file. Nothing mmfw or Lightning stores needs more
    (tests/test_train_eval.py loads a real run's checkpoints this way), so a file that does is refused, not trusted.
    """
    import torch  # here, not at the top: mmfw-compare reads run folders without torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError:
        unsafe = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown objects"
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it holds Python objects ({unsafe}) whose loading could run code. "
            "mmfw checkpoints hold only tensors and plain values; use a checkpoint written by mmfw-train"
        ) from None
    except (OSError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error


def best_checkpoint(run_dir: str | Path) -> tuple[Path, str | None]:
    """The run's best checkpoint (recorded in run.json), else its last one with a note saying why."""
    run_dir = Path(run_dir)
    recorded = read_run_json(run_dir).get("best_checkpoint")
    candidates = [Path(recorded)] if recorded else []
    if recorded and not Path(recorded).is_absolute():
        candidates = [run_dir / recorded]
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    candidates.append(last)
    for path in candidates:
        if path.is_file():
            if path != candidates[0]:
                return path, f"the best checkpoint {candidates[0]} is missing: evaluated {last.name} instead"
            if not recorded:
                return path, f"run.json records no best checkpoint: evaluated {last.name}"
            return path, None
    raise NotARunFolderError(
        f"run folder {str(run_dir)!r} has no checkpoint (looked for {[str(c) for c in candidates]}): "
        "the run did not finish an epoch; train it again or resume it"
    )


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt``, else the newest other complete one; None if there is none.

    A process killed while writing ``last.ckpt`` leaves a truncated file; torch checkpoints are zip archives, so a file
    without a readable zip directory is skipped.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    last = folder / "last.ckpt"
    others = sorted((p for p in folder.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in [last, *others]:
        if path.is_file() and zipfile.is_zipfile(path):
            return path
    return None


def find_runs(folder: str | Path) -> list[Path]:
    """Run folders at or below ``folder`` (a run, a sweep, or a folder of runs or sweeps), in a stable order.

    A run folder is one Hydra wrote a ``.hydra/config.yaml`` into; sweep job folders are ordered by job number.
    """
    folder = Path(folder)
    if (folder / HYDRA_CONFIG).is_file():
        return [folder]
    return sorted({p.parent.parent for p in folder.rglob(str(HYDRA_CONFIG))}, key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]
