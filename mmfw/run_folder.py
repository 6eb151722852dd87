"""What a run folder records about itself, so it can be evaluated, resumed or compared from the folder alone.

<run>/.hydra/{config,overrides,hydra}.yaml   composed config and overrides (written by Hydra)
<run>/resolved_config.yaml                   every interpolation resolved, plus the data-derived `data` node
<run>/run.json                               status, git commit, W&B run id, best checkpoint, final metrics
<run>/packages.txt                           installed package versions
<run>/checkpoints/{epoch_XXX,last}.ckpt      best and last checkpoints
<run>/csv/metrics.csv                        every logged metric
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
