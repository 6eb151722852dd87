"""What a run folder records about itself, so it can be evaluated, resumed or compared from the folder alone.

<run>/.hydra/{config,overrides,hydra}.yaml   composed config and overrides (written by Hydra)
<run>/resolved_config.yaml                   every interpolation resolved, plus the data-derived `data` node
<run>/run.json                               status, git commit, W&B run id, best checkpoint, final metrics
<run>/packages.txt                           installed package versions
<run>/checkpoints/{epoch_XXX,last}.ckpt      best and last checkpoints (last: what `resume=<run>` continues)
<run>/csv/metrics.csv                        every logged metric

run.json ``status``: ``running`` -> ``completed`` | ``failed`` (with ``error``) | ``interrupted`` (SIGTERM or Ctrl-C,
after saving a checkpoint). A run killed outright (SIGKILL, a lost node) stays ``running``; resume it all the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
RESOLVED_CONFIG = "resolved_config.yaml"
CHECKPOINT_DIR = "checkpoints"


class NotARunFolderError(FileNotFoundError):
    """The given folder is not an mmfw run folder."""


def git_state(directory: str | Path = ".") -> dict[str, Any]:
    """Commit hash and whether the work tree had uncommitted changes; ``None`` values outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


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
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(run_dir / RUN_JSON)
    return record


def start_run(run_dir: str | Path, *, resolved_config_yaml: str, overrides: list[str]) -> None:
    """Record the resolved config, git commit, package versions and command; mark the run ``running``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESOLVED_CONFIG).write_text(resolved_config_yaml)
    (run_dir / "packages.txt").write_text("\n".join(package_versions()) + "\n")
    update_run_json(
        run_dir,
        status="running",
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
        overrides=list(overrides),
        git=git_state(),
        python=sys.version.split()[0],
    )


def resume_run(
    run_dir: str | Path, *, resolved_config_yaml: str, checkpoint: str | Path | None, overrides: list[str]
) -> None:
    """Mark a run ``running`` again and append this resumption (time, checkpoint, command) to its ``resumes``.

    The resolved config is written again: a resumed run may change plain values such as ``trainer.max_epochs``.
    """
    (Path(run_dir) / RESOLVED_CONFIG).write_text(resolved_config_yaml)
    record = read_run_json(run_dir)
    entry = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": os.path.relpath(checkpoint, run_dir) if checkpoint else None,
        "previous_status": record.get("status"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "overrides": list(overrides),
    }
    update_run_json(run_dir, status="running", error=None, resumes=[*record.get("resumes", []), entry])


def finish_run(run_dir: str | Path, *, status: str, **fields: Any) -> None:
    """Mark the run ``completed``, ``failed`` or ``interrupted`` (with ``error=...`` when it failed)."""
    update_run_json(run_dir, status=status, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)


def check_run_folder(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path, or raise ``NotARunFolderError`` that says what was expected."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunFolderError(f"run folder {str(run_dir)!r} does not exist: pass run=<folder printed by mmfw-train>")
    if not (run_dir / HYDRA_CONFIG).is_file() or not (run_dir / RUN_JSON).is_file():
        raise NotARunFolderError(
            f"{str(run_dir)!r} is not an mmfw run folder: it has no {HYDRA_CONFIG} and {RUN_JSON}. "
            "Pass run=<folder> of a training run, e.g. logs/train/runs/<time>_<id> "
            "(for a sweep, one of its numbered job folders)"
        )
    return run_dir


def best_checkpoint(run_dir: str | Path) -> Path:
    """The run's best checkpoint (recorded in run.json), else its last one."""
    run_dir = Path(run_dir)
    recorded = read_run_json(run_dir).get("best_checkpoint")
    candidates = [Path(recorded)] if recorded else []
    if recorded and not Path(recorded).is_absolute():
        candidates = [run_dir / recorded]
    candidates.append(run_dir / CHECKPOINT_DIR / "last.ckpt")
    for path in candidates:
        if path.is_file():
            return path
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
