"""Checkpoints are data, never code: mmfw-eval and resume refuse a .ckpt whose unpickling would run something."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import TINY_AVDIGITS, compose_train
from omegaconf import OmegaConf

from mmfw.evaluate import evaluate
from mmfw.runs import run_folder
from mmfw.train import train


class RunsCode:
    """Unpickling this object runs a shell command (what a crafted checkpoint does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like Lightning's but creates ``marker`` when loaded with pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "global_step": 10, "state_dict": {}, "payload": RunsCode(f"touch {marker}")}, path)
    return path


def completed_run(folder: Path) -> Path:
    """A completed run folder whose config is a real (tiny) training config."""
    cfg = compose_train([*TINY_AVDIGITS, "logger=csv"], folder)
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    run_folder.update_run_json(folder, status="completed", best_checkpoint="checkpoints/epoch_001.ckpt")
    return folder


def test_eval_refuses_a_checkpoint_that_runs_code(tmp_path, avdigits_raw):
    run, marker = completed_run(tmp_path / "run"), tmp_path / "pwned"
    evil = crafted_checkpoint(tmp_path / "given.ckpt", marker)
    with pytest.raises(run_folder.UnsafeCheckpointError, match=f"{evil}.*posix.system"):
        evaluate(str(run), ckpt=str(evil))
    crafted_checkpoint(run / "checkpoints" / "epoch_001.ckpt", marker)  # ckpt=best
    with pytest.raises(run_folder.UnsafeCheckpointError, match="epoch_001.ckpt"):
        evaluate(str(run))
    assert not marker.exists() and not (run / "eval_metrics.json").exists()


def test_resume_refuses_a_checkpoint_that_runs_code(tmp_path, avdigits_raw, monkeypatch):
    # Even with torch told to unpickle anything by default, mmfw asks for weights only.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run, marker = completed_run(tmp_path / "run"), tmp_path / "pwned"
    crafted_checkpoint(run / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(run_folder.UnsafeCheckpointError, match="last.ckpt"):
        train(compose_train([f"resume={run}"], run))
    assert not marker.exists()
    assert run_folder.read_run_json(run)["status"] == "completed"
