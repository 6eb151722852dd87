"""Run the console scripts in a subprocess on tiny real data, with logs under a temporary MMFW_ROOT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY_AVDIGITS

BIN = Path(sys.executable).parent
# Tiny data, one CPU process, no progress bars in captured output.
QUIET = [*TINY_AVDIGITS, "callbacks.rich_progress_bar=null", "++trainer.enable_progress_bar=false"]


def env_for(root: Path) -> dict[str, str]:
    # One thread per process: tests run side by side on few cores, where spinning OpenMP threads make
    # a tiny run tens of times slower.
    return {**os.environ, "MMFW_ROOT": str(root), "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}


def mmfw(script: str, *args: str, root: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``<venv>/bin/<script> args...`` from ``root``; logs go to ``root/logs``."""
    return subprocess.run(
        [str(BIN / script), *args], cwd=root, env=env_for(root), capture_output=True, text=True, timeout=timeout
    )


def output(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr)[-6000:]


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def only_child(folder: Path) -> Path:
    (child,) = [p for p in folder.iterdir() if p.is_dir()]
    return child
