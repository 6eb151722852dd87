"""trainer=ddp_cpu: two processes (gloo) run the same code as one, into one run folder and one W&B run."""

from __future__ import annotations

import pytest
from cli_helpers import QUIET, mmfw, only_child, output, run_json
from conftest import compose_train

from mmfw.evaluate import evaluate
from mmfw.sweep import uses_ddp_subprocesses


def test_ddp_presets_start_one_process_per_device(tmp_path):
    assert uses_ddp_subprocesses(compose_train(["trainer=ddp_cpu"], tmp_path).trainer)
    assert uses_ddp_subprocesses(compose_train(["trainer=ddp"], tmp_path).trainer)
    assert not uses_ddp_subprocesses(compose_train(["trainer=cpu"], tmp_path).trainer)


@pytest.mark.slow
def test_ddp_cpu_trains_end_to_end(tmp_path, avdigits_raw):
    result = mmfw("mmfw-train", "trainer=ddp_cpu", "trainer.max_epochs=1", *QUIET, root=tmp_path)
    assert result.returncode == 0, output(result)
    run = only_child(tmp_path / "logs" / "train" / "runs")  # rank 1 wrote into rank 0's folder
    record = run_json(run)
    assert record["status"] == "completed"
    (wandb_run,) = (run / "wandb").glob("offline-run-*")  # one W&B run, from rank 0
    assert wandb_run.name.endswith(record["wandb_run_id"])
    assert (run / "train.log").is_file() and (run / "train_ddp_process_1.log").is_file()
    # Each process tests half of the test set; the synchronised metrics equal one process testing all of it.
    single = evaluate(str(run), accelerator="cpu")
    for name in ("test/acc", "test/f1_macro", "test/loss"):
        assert record["test_metrics"][name] == pytest.approx(single[name], abs=1e-5), name
