"""Train on real AV-digits (tiny), then reload the run with mmfw-eval and get the same test metrics."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_AVDIGITS, compose_train
from omegaconf import OmegaConf

from mmfw.evaluate import evaluate, load_run_config
from mmfw.runs import run_folder
from mmfw.runs.run_folder import NotARunFolderError
from mmfw.train import train

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, avdigits_raw):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train([*TINY_AVDIGITS, "trainer.max_epochs=2"], run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra writes before the job starts
    score = train(cfg)
    return run_dir, score


def test_run_folder_holds_everything(trained_run):
    run_dir, score = trained_run
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["monitor"] == {"metric": "val/acc", "mode": "max", "best": score}
    assert record["git"].keys() >= {"root", "commit", "dirty"} and record["cwd"] == os.getcwd()
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


def test_eval_logs_a_wandb_run_of_job_type_eval_beside_the_training_run(trained_run):
    """The run trained with the default loggers (W&B offline): mmfw-eval adds a W&B run of job type ``eval`` in the
    training run's group and with its name, the evaluated metrics as its summary."""
    from test_dashboards import wandb_offline_run

    run_dir, _ = trained_run
    metrics = evaluate(str(run_dir))
    saved = json.loads((run_dir / "eval_metrics.json").read_text())
    (train_id,) = run_folder.read_run_json(run_dir)["wandb_run_ids"]
    trained, evaluated = wandb_offline_run(run_dir, train_id), wandb_offline_run(run_dir, saved["wandb_run_id"])
    assert (trained["job_type"], evaluated["job_type"]) == ("train", "eval")
    assert (evaluated["group"], evaluated["name"]) == (trained["group"], trained["name"])
    assert evaluated["config"]["evaluated_run"] == str(run_dir)
    for name, value in metrics.items():
        assert evaluated["summary"][name] == pytest.approx(value), name


def test_checkpoints_load_as_weights_only(trained_run):
    """Everything mmfw and Lightning put into a checkpoint loads without unpickling arbitrary classes."""
    run_dir, _ = trained_run
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
        assert run_folder.load_checkpoint(path)["state_dict"]


def test_eval_says_when_the_best_checkpoint_is_gone(trained_run, tmp_path, caplog):
    run_dir = Path(shutil.copytree(trained_run[0], tmp_path / "run", ignore=shutil.ignore_patterns("wandb")))
    best = run_dir / json.loads((run_dir / "run.json").read_text())["best_checkpoint"]
    best.unlink()
    with caplog.at_level(logging.WARNING):
        evaluate(str(run_dir))
    saved = json.loads((run_dir / "eval_metrics.json").read_text())
    assert saved["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert best.name in saved["checkpoint_note"] and "last.ckpt" in saved["checkpoint_note"]
    assert saved["checkpoint_note"] in caplog.text


def test_eval_uses_the_runs_paths_not_the_working_directory(trained_run, tmp_path, monkeypatch):
    run_dir, _ = trained_run
    trained_with = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())["paths"]
    monkeypatch.delenv("MMFW_CACHE_DIR")
    monkeypatch.delenv("MMFW_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    paths = load_run_config(run_dir).paths
    assert paths.cache_dir == trained_with["cache_dir"] and Path(paths.cache_dir).is_absolute()
    assert paths.output_dir == str(run_dir)


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
    # Started from another folder without the environment of training: caches stay where the run's config says.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    eval_env = {k: v for k, v in env.items() if k not in ("MMFW_ROOT", "MMFW_CACHE_DIR")}
    out = subprocess.run(
        [str(BIN / "mmfw-eval"), f"run={run_dir}"],
        cwd=elsewhere,
        env=eval_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test/acc" in out.stdout
    logged = json.loads((run_dir / "test_metrics.json").read_text())
    evaluated = json.loads((run_dir / "eval_metrics.json").read_text())["metrics"]
    assert all(evaluated[k] == pytest.approx(v, abs=1e-6) for k, v in logged.items())
    assert list(elsewhere.iterdir()) == []
    bad = subprocess.run([str(BIN / "mmfw-eval"), f"run={tmp_path}"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "not an mmfw run folder" in bad.stderr


def test_eval_rebuilds_the_data_the_run_trained_on(trained_run, tmp_path, monkeypatch):
    """The datamodule node comes from the run's resolved config: MMFW_AVDIGITS_RAW pointing elsewhere (or unset) at
    eval time changes neither the raw folder nor the test metrics."""
    run_dir, _ = trained_run
    trained_with = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())["datamodule"]
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("MMFW_AVDIGITS_RAW", str(elsewhere))
    cfg = load_run_config(run_dir)
    assert OmegaConf.to_container(cfg.datamodule) == trained_with
    metrics = evaluate(str(run_dir))
    assert not elsewhere.exists()
    logged = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(logged["test/acc"], abs=1e-6)
    monkeypatch.delenv("MMFW_AVDIGITS_RAW")
    assert load_run_config(run_dir).datamodule.raw_dir == trained_with["raw_dir"]
