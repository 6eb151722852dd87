"""Train on real AV-digits (tiny), then reload the run with mmfw-eval and get the same test metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_AVDIGITS, compose_train
from omegaconf import OmegaConf

from mmfw.evaluate import evaluate
from mmfw.run_folder import NotARunFolderError
from mmfw.train import train

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, avdigits_raw):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train([*TINY_AVDIGITS, "trainer.max_epochs=2", "callbacks.rich_progress_bar=null"], run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra writes before the job starts
    score = train(cfg)
    return run_dir, score


def test_run_folder_holds_everything(trained_run):
    run_dir, score = trained_run
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["monitor"] == {"metric": "val/acc", "mode": "max", "best": score}
    assert record["git"].keys() == {"commit", "dirty"}
    assert record["wandb_run_id"] and list((run_dir / "wandb").glob(f"offline-run-*-{record['wandb_run_id']}"))
    assert (run_dir / record["best_checkpoint"]).is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "csv" / "metrics.csv").read_text().startswith(("epoch", "lr", "step", "test", "train", "val"))
    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    assert resolved["data"] == {"kind": "multiclass", "num_outputs": 10, "class_names": [str(d) for d in range(10)]}
    assert any(line.startswith("torch==") for line in (run_dir / "packages.txt").read_text().splitlines())
    assert {"test/acc", "test/acc[-audio]", "test/acc[-image]"} <= set(record["test_metrics"])


def test_eval_reproduces_training_test_metrics(trained_run, tmp_path):
    run_dir, _ = trained_run
    metrics = evaluate(str(run_dir))
    logged = json.loads((run_dir / "test_metrics.json").read_text())
    assert set(logged) <= set(metrics)
    for name, value in logged.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name
    saved = json.loads((run_dir / "eval_metrics.json").read_text())
    assert saved["metrics"] == metrics


def test_eval_on_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(NotARunFolderError, match="not an mmfw run folder"):
        evaluate(str(tmp_path))
    with pytest.raises(NotARunFolderError, match="does not exist"):
        evaluate(str(tmp_path / "nope"))


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path, avdigits_raw):
    """The console scripts end to end: mmfw-train writes a run folder, mmfw-eval reproduces its test metrics."""
    env = {**os.environ, "MMFW_ROOT": str(tmp_path)}
    train_cmd = [str(BIN / "mmfw-train"), *TINY_AVDIGITS, "trainer.max_epochs=1", "logger=csv"]
    subprocess.run(train_cmd, check=True, env=env, capture_output=True, timeout=300)
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    out = subprocess.run(
        [str(BIN / "mmfw-eval"), f"run={run_dir}"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test/acc" in out.stdout
    logged = json.loads((run_dir / "test_metrics.json").read_text())
    evaluated = json.loads((run_dir / "eval_metrics.json").read_text())["metrics"]
    assert all(evaluated[k] == pytest.approx(v, abs=1e-6) for k, v in logged.items())
    bad = subprocess.run([str(BIN / "mmfw-eval"), f"run={tmp_path}"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "not an mmfw run folder" in bad.stderr
