"""Run folders: a new run never takes over an existing one; records stay true after faults (disk full, typos)."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import threading
from pathlib import Path

import pytest
from cli_helpers import mmfw, output
from conftest import TINY_AVDIGITS
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from mmfw.runs import run_folder
from mmfw.runs.job import record_stop
from mmfw.train import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent


def finished_run(folder: Path) -> Path:
    """A run folder as a completed mmfw-train run leaves it (the files that matter here)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "epoch_001.ckpt").write_bytes(b"best")
    run_folder.update_run_json(folder, status="completed", best_checkpoint="checkpoints/epoch_001.ckpt")
    return folder


def hydra_run_config(run_dir: Path, resume: str | None = None):
    return OmegaConf.create({"resume": resume, "hydra": {"run": {"dir": str(run_dir)}, "overrides": {"task": []}}})


# ---------------------------------------------------------------- a new run claims a new folder


def test_a_new_run_refuses_a_folder_that_holds_a_run(tmp_path):
    run = finished_run(tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit, match=f"RunFolderTakenError: .*resume={run}"):
        run_folder.ClaimRunFolder().on_run_start(hydra_run_config(run))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # A folder Hydra wrote a config into (a run that stopped before run.json) counts as a run too.
    (run / run_folder.RUN_JSON).unlink()
    with pytest.raises(run_folder.RunFolderTakenError):
        run_folder.claim_run_folder(run, overrides=[])


def test_only_one_of_many_concurrent_runs_claims_a_folder(tmp_path):
    folder, barrier, outcomes = tmp_path / "run", threading.Barrier(8), []

    def claim():
        barrier.wait()
        try:
            run_folder.claim_run_folder(folder, overrides=[])
            outcomes.append("claimed")
        except run_folder.RunFolderTakenError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed"] + ["refused"] * 7
    assert run_folder.read_run_json(folder)["status"] == "running"


def test_ddp_ranks_and_resumed_runs_join_the_folder(tmp_path, monkeypatch):
    run = finished_run(tmp_path / "run")
    run_folder.ClaimRunFolder().on_run_start(hydra_run_config(run, resume=str(run)))  # resume=: continue in place
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning starts rank 1 so, with hydra.run.dir=<rank 0's folder>
    run_folder.ClaimRunFolder().on_run_start(hydra_run_config(run))
    assert run_folder.read_run_json(run)["status"] == "completed"


@pytest.mark.parametrize(
    ("env", "output_subdir"), [({}, ".hydra"), ({"RANK": "1"}, None), ({"SLURM_PROCID": "3"}, None)]
)
def test_only_rank_zero_writes_the_runs_hydra_config(env, output_subdir, monkeypatch):
    """torchrun/srun start every rank with the same command: the others must not write .hydra/ before rank 0 claims."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        assert compose("train", return_hydra_config=True).hydra.output_subdir == output_subdir


def test_cli_refuses_a_finished_run_folder_before_hydra_writes_into_it(tmp_path):
    run = finished_run(tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = mmfw(
        "mmfw-train", f"hydra.run.dir={run}", *TINY_AVDIGITS, "trainer.max_epochs=1", "logger=csv", root=tmp_path
    )
    assert result.returncode != 0
    assert f"resume={run}" in output(result) and "already holds a run" in output(result)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # config, run.json untouched


# ---------------------------------------------------------------- resume=<typo>


def test_resume_of_a_missing_folder_names_resume_and_creates_nothing(tmp_path):
    typo = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00_typo"
    with pytest.raises(SystemExit, match=f"NotARunFolderError: resume={typo}") as error:
        run_folder.ClaimRunFolder().on_run_start(hydra_run_config(typo, resume=str(typo)))
    assert "run=" not in str(error.value).replace("resume=", "")
    assert not typo.exists()


def test_cli_resume_typo_creates_no_folder(tmp_path):
    typo = tmp_path / "logs" / "train" / "runs" / "typo"
    result = mmfw("mmfw-train", f"resume={typo}", root=tmp_path)
    assert result.returncode != 0 and f"resume={typo}" in output(result)
    assert not typo.exists() and not (tmp_path / "logs").exists()


# ---------------------------------------------------------------- disk full


class FullDisk:
    """A file system of fixed capacity around ``folder``: writing beyond it fails with ENOSPC, deleting frees space.

    Files are opened through ``io.open`` (``open``, ``Path.write_text``); the capacity is what the folder holds when
    the disk fills up.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.capacity = self.used()
        self.real_open = io.open

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())

    def open(self, file, mode="r", *args, **kwargs):
        handle = self.real_open(file, mode, *args, **kwargs)
        return handle if mode.startswith("r") and "+" not in mode else _Limited(handle, self)


class _Limited:
    def __init__(self, handle, disk: FullDisk) -> None:
        self.handle, self.disk = handle, disk

    def write(self, data) -> int:
        self.handle.flush()
        if self.disk.used() + len(data) > self.disk.capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_a_run_that_fills_the_disk_is_recorded_as_failed(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_folder.start_run(run, resolved_config_yaml="seed: 1\n", overrides=["trainer.max_epochs=3"])
    monkeypatch.setattr(io, "open", FullDisk(run).open)
    (run / "checkpoints").mkdir()
    with pytest.raises(OSError, match="No space left"):
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x" * 4096)  # the checkpoint that does not fit
    error = OSError(errno.ENOSPC, "No space left on device")
    record_stop(run, error, trainer=None)
    record = run_folder.read_run_json(run)
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert not list(run.glob(".*.tmp"))  # no half-written record left behind


# ---------------------------------------------------------------- git state


def test_git_state_is_the_codes_even_when_started_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git checkout
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    state = run_folder.run_git_state()
    assert state["commit"] == head and state["root"] == str(REPO) and isinstance(state["dirty"], bool)
    assert "cwd" not in state  # the working directory is no repository at all
    other = tmp_path / "project"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    monkeypatch.chdir(other)
    assert run_folder.run_git_state()["cwd"] == {"root": str(other.resolve()), "commit": None, "dirty": None}


def test_run_json_records_the_codes_git_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_folder.start_run(tmp_path / "run", resolved_config_yaml="seed: 1\n", overrides=[])
    record = run_folder.read_run_json(tmp_path / "run")
    assert record["git"]["commit"] and record["cwd"] == str(tmp_path)


# ---------------------------------------------------------------- checkpoints


def test_best_checkpoint_says_when_it_falls_back_to_last(tmp_path):
    run = finished_run(tmp_path / "run")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"last")
    assert run_folder.best_checkpoint(run) == (run / "checkpoints" / "epoch_001.ckpt", None)
    (run / "checkpoints" / "epoch_001.ckpt").unlink()
    path, note = run_folder.best_checkpoint(run)
    assert path == run / "checkpoints" / "last.ckpt"
    assert "epoch_001.ckpt" in note and "last.ckpt" in note
