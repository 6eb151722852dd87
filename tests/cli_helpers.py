"""Run the console scripts in a subprocess on tiny real data, with logs under a temporary MMFW_ROOT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def env_for(root: Path) -> dict[str, str]:
    # One thread per process: tests run side by side on few cores, where spinning OpenMP threads make
    # a tiny run tens of times slower.
    return {**os.environ, "MMFW_ROOT": str(root), "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}


def mmfw(
    script: str, *args: str, root: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``<venv>/bin/<script> args...`` from ``root``; logs go to ``root/logs``; ``env`` adds variables.

    On timeout the whole process group is killed (DDP ranks must not outlive a hung test) and the output is shown.
    """
    with subprocess.Popen(
        [str(BIN / script), *args],
        cwd=root,
        env={**env_for(root), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            tail = (stdout + stderr)[-6000:]
            raise TimeoutError(f"{script} {' '.join(args)} ran over {timeout} s; its last output:\n{tail}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def output(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr)[-6000:]


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def only_child(folder: Path) -> Path:
    (child,) = [p for p in folder.iterdir() if p.is_dir()]
    return child
