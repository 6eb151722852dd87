"""Faults: SIGKILL then resume gives the uninterrupted run's results; SIGTERM saves a checkpoint; resume rules."""

from __future__ import annotations

import csv
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_helpers import BIN, env_for, mmfw, output, run_json
from conftest import TINY_AVDIGITS
from omegaconf import OmegaConf

from mmfw.runs import callbacks, resume, run_folder

# ---------------------------------------------------------------- unit


def write_ckpt(path: Path, valid: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if valid:
        torch.save({"global_step": 1}, path)
    else:
        path.write_bytes(b"PK\x03\x04 truncated")
    return path


def test_last_checkpoint_skips_a_truncated_file(tmp_path):
    assert run_folder.last_checkpoint(tmp_path) is None
    older = write_ckpt(tmp_path / "checkpoints" / "epoch_000.ckpt")
    newer = write_ckpt(tmp_path / "checkpoints" / "epoch_001.ckpt")
    last = write_ckpt(tmp_path / "checkpoints" / "last.ckpt")
    assert run_folder.last_checkpoint(tmp_path) == last
    write_ckpt(last, valid=False)  # killed while writing last.ckpt
    assert older.stat().st_mtime <= newer.stat().st_mtime
    assert run_folder.last_checkpoint(tmp_path) == newer


def fake_run(tmp_path: Path, **record) -> Path:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    saved = {
        "seed": 1,
        "resume": None,
        "paths": {"output_dir": "${hydra:runtime.output_dir}"},
        "trainer": {"max_epochs": 2},
        "fusion": {"_target_": "x", "out_dim": 8},
        "logger": {"wandb": {"_target_": resume.WANDB_FACTORY, "group": "g", "name": None}},
        "callbacks": {name: {"_target_": "x"} for name in resume.REQUIRED_CALLBACKS},  # conf/callbacks/default.yaml
    }
    OmegaConf.save(OmegaConf.create(saved), run / ".hydra" / "config.yaml")
    run_folder.update_run_json(run, status="running", **record)
    return run


def test_resume_loads_the_runs_config_checkpoint_and_wandb_run(tmp_path):
    run = fake_run(tmp_path, wandb_run_id="abc123", wandb_group="sweep_x", wandb_name="fusion=late")
    run_folder.update_run_json(run, overrides=["fusion=late", "logger=csv"])
    last = write_ckpt(run / "checkpoints" / "last.ckpt")
    cfg = OmegaConf.create({"resume": str(run), "paths": {"output_dir": str(run)}, "seed": 99})
    # The run's own group overrides may be repeated (a rerun sweep does); they are in its config already.
    overrides = ["fusion=late", "logger=csv", "resume=" + str(run), "trainer.max_epochs=5"]
    loaded, checkpoint = resume.load_run_to_resume(cfg, overrides)
    assert checkpoint == last
    assert loaded.seed == 1 and loaded.trainer.max_epochs == 5 and loaded.resume == str(run)
    wandb = loaded.logger.wandb
    assert (wandb.resumed_from, wandb.segment, wandb.group, wandb.name) == ("abc123", 1, "sweep_x", "fusion=late")


def test_resume_refuses_group_changes_and_other_folders(tmp_path):
    run = fake_run(tmp_path)
    cfg = OmegaConf.create({"resume": str(run), "paths": {"output_dir": str(run)}})
    with pytest.raises(resume.ResumeError, match="start a new run"):
        resume.load_run_to_resume(cfg, ["fusion=late"])
    with pytest.raises(resume.ResumeError, match="start a new run"):
        resume.load_run_to_resume(cfg, ["+trainer.new_key=1"])
    elsewhere = OmegaConf.create({"resume": str(run), "paths": {"output_dir": str(tmp_path / "sweep" / "0")}})
    with pytest.raises(resume.ResumeError, match="hydra.sweep.dir"):
        resume.load_run_to_resume(elsewhere, [])
    with pytest.raises(run_folder.NotARunFolderError):
        resume.load_run_to_resume(OmegaConf.create({"resume": str(tmp_path), "paths": {"output_dir": "."}}), [])


def test_resume_refuses_a_run_configured_without_the_resume_callbacks(tmp_path):
    run = fake_run(tmp_path)
    write_ckpt(run / "checkpoints" / "last.ckpt")
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    saved.callbacks.epoch_seed = None  # callbacks.epoch_seed=null when the run started
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    cfg = OmegaConf.create({"resume": str(run), "paths": {"output_dir": str(run)}})
    with pytest.raises(resume.ResumeError, match=r"without callbacks\.epoch_seed .*callbacks=default"):
        resume.load_run_to_resume(cfg, [])
    assert run_json(run)["status"] == "running"  # refused before the folder changed


def test_callbacks_none_gets_no_hidden_callback_and_cannot_be_resumed(tmp_path, avdigits_raw):
    """callbacks=none trains with no mmfw callback (none writes checkpoints/last.ckpt); resume= of it is refused."""
    result = mmfw("mmfw-train", *TINY_AVDIGITS, "callbacks=none", "trainer=cpu", "trainer.max_epochs=1", root=tmp_path)
    assert result.returncode == 0, output(result)
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert run_json(run)["status"] == "completed"
    assert not (run / "checkpoints").exists(), "a callback that callbacks=none does not list wrote checkpoints/"
    resumed = mmfw("mmfw-train", f"resume={run}", root=tmp_path)
    assert resumed.returncode != 0
    assert "callbacks.last_checkpoint" in output(resumed) and "callbacks.epoch_seed" in output(resumed)
    assert run_json(run)["status"] == "completed"


def test_epoch_seed_makes_each_epochs_order_a_function_of_the_epoch():
    loader = torch.utils.data.DataLoader(range(32), batch_size=8, shuffle=True, generator=torch.Generator())
    callback = callbacks.EpochSeed(seed=3)

    def epoch_order(epoch: int) -> list[int]:
        callback.on_train_epoch_start(
            SimpleNamespace(current_epoch=epoch, global_rank=0, train_dataloader=loader), None
        )
        return [int(i) for batch in loader for i in batch]

    first = [epoch_order(e) for e in range(3)]
    assert first[0] != first[1] != first[2]
    assert epoch_order(2) == first[2]  # a restarted process draws epoch 2's order again
    callback.on_train_epoch_start(SimpleNamespace(current_epoch=1, global_rank=0, train_dataloader=loader), None)
    dropout = torch.rand(3)
    callback.on_train_epoch_start(SimpleNamespace(current_epoch=1, global_rank=0, train_dataloader=loader), None)
    assert torch.equal(dropout, torch.rand(3))


# ---------------------------------------------------------------- real processes

# Enough epochs that a run is still training when it is killed after epoch 1; deterministic CPU kernels.
RESUMABLE = [*TINY_AVDIGITS, "trainer=cpu", "trainer.deterministic=true", "datamodule.batch_size=4"]
RESUMABLE += ["callbacks.model_checkpoint.save_top_k=-1", "callbacks.early_stopping=null"]


def metrics_by_epoch(run: Path) -> dict[tuple[str, str], str]:
    """(epoch, metric) -> value for the validation metrics of every epoch and the training metrics of the last.

    A training epoch's metrics are logged just after its checkpoint, so a kill can fall between the two and lose
    that row. ``val/acc_best`` is the module's own running maximum, which a checkpoint does not hold yet.
    """
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    last = max(int(r["epoch"]) for r in rows if r["epoch"])
    keep = {(r["epoch"], k): v for r in rows for k, v in r.items() if v and k.startswith(("val/", "train/"))}
    return {
        (epoch, k): v
        for (epoch, k), v in keep.items()
        if k != "val/acc_best" and (k[:4] == "val/" or epoch == str(last))
    }


def start(run: Path, *args: str, root: Path) -> subprocess.Popen:
    command = [str(BIN / "mmfw-train"), *RESUMABLE, *args, f"hydra.run.dir={run}"]
    return subprocess.Popen(command, cwd=root, env=env_for(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} existed: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.005)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, avdigits_raw):
    epochs = "trainer.max_epochs=10"
    reference = tmp_path / "reference"
    done = start(reference, epochs, root=tmp_path)
    killed = tmp_path / "killed"
    proc = start(killed, epochs, root=tmp_path)
    wait_for(killed / "checkpoints" / "epoch_001.ckpt", proc)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert run_json(killed)["status"] == "running"  # nothing could record the kill
    continue_from = torch.load(run_folder.last_checkpoint(killed), weights_only=False)["epoch"]
    assert continue_from < 9  # most of the run is trained after the resume
    resumed = mmfw("mmfw-train", f"resume={killed}", root=tmp_path)
    assert resumed.returncode == 0, output(resumed)
    assert done.wait(timeout=300) == 0, done.stderr.read()[-3000:]

    before, after = run_json(reference), run_json(killed)
    assert after["status"] == "completed" and after["resumes"][0]["previous_status"] == "running"
    assert len(after["resumes"]) == 1  # one resumption recorded once
    assert after["test_metrics"] == before["test_metrics"]
    assert after["monitor"] == before["monitor"]
    assert metrics_by_epoch(killed) == metrics_by_epoch(reference)  # every epoch, before and after the kill
    # The resumed process logged the next segment of the run: a new W&B run, each offline run folder its own id.
    first_id, second_id = after["wandb_run_ids"]
    assert first_id != second_id == after["wandb_run_id"]
    assert [len(list((killed / "wandb").glob(f"offline-run-*-{i}"))) for i in (first_id, second_id)] == [1, 1]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_can_continue(tmp_path, avdigits_raw):
    run = tmp_path / "run"
    proc = start(run, "trainer.max_epochs=1000", "logger=csv", root=tmp_path)
    wait_for(run / "checkpoints" / "epoch_000.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    record = run_json(run)
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"] and "resume=" in record["error"]
    last = run / "checkpoints" / "last.ckpt"
    assert zipfile.is_zipfile(last)
    steps = torch.load(last, weights_only=False)["global_step"]
    assert steps >= torch.load(run / "checkpoints" / "epoch_000.ckpt", weights_only=False)["global_step"]
    resumed = mmfw("mmfw-train", f"resume={run}", "trainer.max_epochs=3", root=tmp_path)
    assert resumed.returncode == 0, output(resumed)
    record = run_json(run)
    assert record["status"] == "completed" and record["resumes"][0]["previous_status"] == "interrupted"
    assert torch.load(last, weights_only=False)["epoch"] == 2
