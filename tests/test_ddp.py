"""trainer=ddp_cpu: two processes (gloo) run the same code as one, into one run folder and one W&B run."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import hydra
import pytest
from cli_helpers import mmfw, only_child, output, run_json
from conftest import TINY_AVDIGITS, compose_train
from pytorch_lightning.strategies import DDPStrategy

from mmfw.evaluate import evaluate
from mmfw.runs.sweep import uses_ddp_subprocesses


def test_ddp_presets_start_one_process_per_device(tmp_path):
    assert uses_ddp_subprocesses(compose_train(["trainer=ddp_cpu"], tmp_path).trainer)
    assert uses_ddp_subprocesses(compose_train(["trainer=ddp"], tmp_path).trainer)
    assert not uses_ddp_subprocesses(compose_train(["trainer=cpu"], tmp_path).trainer)
    spawn = compose_train(["trainer=ddp_cpu", "+trainer.strategy.start_method=spawn"], tmp_path).trainer
    assert not uses_ddp_subprocesses(spawn)


@pytest.mark.parametrize("preset", ["ddp", "ddp_cpu"])
def test_ddp_presets_time_out_collectives(preset, tmp_path):
    """A rank left waiting in a collective fails within minutes (naming the operation) instead of hanging."""
    strategy = hydra.utils.instantiate(compose_train([f"trainer={preset}"], tmp_path).trainer.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert timedelta(minutes=1) <= strategy._timeout <= timedelta(minutes=10)


@pytest.mark.slow
def test_ddp_cpu_with_the_shipped_callbacks_completes(tmp_path, avdigits_raw):
    """What users run: the default callbacks (rich progress bar drawn by rank 0 only), two epochs.

    The ranks must issue their collectives in the same order whichever callbacks run; they hung at the end of the
    first epoch when rank 0's progress bar all-reduced the epoch loss while rank 1 gathered the train metrics.
    """
    result = mmfw("mmfw-train", "trainer=ddp_cpu", "trainer.max_epochs=2", *TINY_AVDIGITS, root=tmp_path, timeout=300)
    assert result.returncode == 0, output(result)
    run = only_child(tmp_path / "logs" / "train" / "runs")  # rank 1 wrote into rank 0's folder
    record = run_json(run)
    assert record["status"] == "completed"
    assert record["monitor"]["best"] is not None
    (wandb_run,) = (run / "wandb").glob("offline-run-*")  # one W&B run, from rank 0
    assert wandb_run.name.endswith(record["wandb_run_id"])
    assert (run / "train.log").is_file() and (run / "train_ddp_process_1.log").is_file()
    # Each process tests half of the test set; the synchronised metrics equal one process testing all of it.
    single = evaluate(str(run), accelerator="cpu")
    for name in ("test/acc", "test/f1_macro", "test/loss"):
        assert record["test_metrics"][name] == pytest.approx(single[name], abs=1e-5), name


@pytest.mark.slow
def test_ranks_out_of_step_fail_within_the_collective_timeout(tmp_path, avdigits_raw):
    """A hang (rank 0 alone in a collective) becomes an error naming the timeout and where; no rank outlives the run."""
    tests = str(Path(__file__).parent)
    result = mmfw(
        "mmfw-train",
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "trainer.strategy.timeout.minutes=1",  # more than the ranks' start-up skew (the store waits too)
        "+callbacks.out_of_step._target_=ddp_faults.RankOneStalls",
        *TINY_AVDIGITS,
        root=tmp_path,
        timeout=240,
        env={"PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode != 0
    # The whole output: the ranks' tracebacks arrive in either order, and the last 6000 characters may be rank 1's.
    everything = result.stdout + result.stderr
    assert "Timed out waiting 60000ms" in everything and "in on_train_epoch_end" in everything, output(result)
    record = run_json(only_child(tmp_path / "logs" / "train" / "runs"))
    assert record["status"] == "failed" and "Timed out" in record["error"]
