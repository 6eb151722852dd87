"""Start-up: the commands that need no training answer without importing torch, Lightning, timm or wandb.

Each case runs the entry point in a fresh interpreter (the same ``main`` the console script calls) and reports which
heavy modules ended up in ``sys.modules``; a top-level ``import torch`` in a module on these paths fails it. Times
are measured by bench/startup.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "timm", "wandb", "torchmetrics", "optuna")

PROBE = """
import json, sys
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module, *argv]
main = __import__(module, fromlist=["main"]).main
code = 0
try:
    main(argv) if module == "mmfw.runs.compare" else main()
except SystemExit as exit:
    code = exit.code
except Exception as error:  # a config error raised by the task function
    code = type(error).__name__
print("PROBE", json.dumps({"code": code, "heavy": [m for m in HEAVY_NAMES if m in sys.modules]}))
"""
PROBE = f"HEAVY_NAMES = {HEAVY!r}\n" + PROBE


def probe(tmp_path: Path, module: str, *argv: str) -> dict:
    env = {**os.environ, "MMFW_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    line = next((line for line in out.stdout.splitlines() if line.startswith("PROBE ")), None)
    assert line is not None, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(line.removeprefix("PROBE "))


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["--cfg", "job"], 0),
        (["--cfg", "job", "fusion=late", "modalities=[image]"], 0),
        (["--info", "defaults"], 0),
        (["no_such_key=1"], "ConfigCompositionException"),  # Hydra refuses it before the task runs
        (["+no_such_key=1"], "ConfigError"),  # mmfw refuses it in the task, before anything is built
        (["trainer.max_epochs=abc"], "ConfigValueError"),
    ],
)
def test_train_commands_without_training_import_nothing_heavy(argv, code, tmp_path):
    result = probe(tmp_path, "mmfw.train", *argv)
    assert result["code"] == code
    # A wrongly typed Trainer argument is checked against Trainer's signature: Lightning (and torch) load for it.
    allowed = {"torch", "pytorch_lightning", "lightning_fabric", "torchmetrics"} if "max_epochs" in argv[0] else set()
    assert set(result["heavy"]) <= allowed, f"mmfw-train {' '.join(argv)} imported {result['heavy']}"


def test_a_config_error_is_recorded_without_importing_torch(tmp_path):
    result = probe(tmp_path, "mmfw.train", "+no_such_key=1")
    assert result == {"code": "ConfigError", "heavy": []}
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "no_such_key" in record["error"]


def test_compare_imports_nothing_heavy(tmp_path):
    assert probe(tmp_path, "mmfw.runs.compare", "--help")["heavy"] == []
    (tmp_path / "runs").mkdir()
    assert probe(tmp_path, "mmfw.runs.compare", str(tmp_path / "runs"))["heavy"] == []
