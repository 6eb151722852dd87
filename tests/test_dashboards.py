"""Dashboards: the W&B, TensorBoard and MLflow records of a sweep carry the choices, sizes and final numbers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import mmfw, only_child, output, run_json
from conftest import TINY_AVDIGITS
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from test_resume_changes import item_key, wandb_records

from mmfw.runs.loggers import dashboard_hparams, mlflow_metric_name
from mmfw.train import CONFIG_DIR

# ---------------------------------------------------------------- readers of each dashboard's files


def wandb_offline_run(run_dir: Path, run_id: str) -> dict:
    """An offline W&B run as the dashboard will show it after `wandb sync`: run fields, config, last summary."""
    (log_file,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    # wandb-core writes the file from its own process: on a loaded machine the records can land a moment after
    # `run.finish()` returned (seen under `pytest -n 2` beside other jobs); wait for its exit record (the last one),
    # then read all.
    deadline = time.monotonic() + 60
    while (
        not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(log_file)) and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    info: dict = {"config": {}, "summary": {}}
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info |= {"group": run.run_group, "job_type": run.job_type, "name": run.display_name, "tags": run.tags}
            info["config"] |= {item_key(i): json.loads(i.value_json) for i in run.config.update}
        elif kind == "config":
            info["config"] |= {item_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "summary":
            info["summary"] |= {item_key(i): json.loads(i.value_json) for i in record.summary.update}
    return info


def tensorboard_hparams(run_dir: Path) -> dict:
    """What TensorBoard's HParams tab shows for one run: its hparams, its metric tags and their last values."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hparams = {}
    for key, value in start.session_start_info.hparams.items():
        hparams[key] = getattr(value, value.WhichOneof("kind"))
    tags = [info.name.tag for info in experiment.experiment.metric_infos]
    return {"hparams": hparams, "metrics": {tag: events.Scalars(tag)[-1].value for tag in tags}}


# ---------------------------------------------------------------- unit


def test_dashboard_keys_are_the_choices_sizes_modalities_and_set_values(tmp_path):
    overrides = ["fusion=late", "modalities=[image]", "model.optimizer.lr=0.01", "seed=3", "hydra.job.name=x"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides[:-1], return_hydra_config=True)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra)}), tmp_path / ".hydra/hydra.yaml")
    with open_dict(cfg):
        del cfg.hydra
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    keys = dashboard_hparams(cfg, model, run_dir=tmp_path, overrides=overrides)
    assert keys["choice/fusion"] == "late" and keys["choice/encoder/image"] == "lenet"
    assert keys["choice/experiment"] == "null" and keys["choice/datamodule"] == "avdigits"
    assert "choice/encoder/audio" not in keys  # not a modality of this run
    assert not [k for k in keys if k.startswith("choice/hydra")]
    assert keys["model/params/total"] == 8 + 3 and keys["model/params/trainable"] == 3
    assert keys["modalities"] == "image" and keys["seed"] == 3
    assert keys["model.optimizer.lr"] == 0.01
    assert "fusion" not in keys and "hydra.job.name" not in keys


def test_mlflow_metric_names_keep_what_the_brackets_said():
    assert mlflow_metric_name("test/acc[-image]") == "test/acc.-image"
    assert mlflow_metric_name("baseline[text]/test/auroc") == "baseline.text/test/auroc"
    assert mlflow_metric_name("val/acc_best") == "val/acc_best"
    assert mlflow_metric_name("a+b") == "a_b"


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_two_job_sweep_in_wandb_tensorboard_and_mlflow(tmp_path, avdigits_raw):
    from mlflow.tracking import MlflowClient

    args = ["-m", "fusion=concat,late", "logger=[wandb,tensorboard,mlflow]", "trainer.max_epochs=2", "baseline=true"]
    result = mmfw("mmfw-train", *args, "tags=[dash,avdigits]", *TINY_AVDIGITS, root=tmp_path)
    assert result.returncode == 0, output(result)
    sweep_dir = only_child(tmp_path / "logs" / "train" / "multiruns")
    store = MlflowClient(f"sqlite:///{tmp_path}/logs/mlflow.db")
    experiment = store.get_experiment_by_name(sweep_dir.name)  # one MLflow experiment per sweep
    mlflow_runs = {r.data.params["choice/fusion"]: r for r in store.search_runs([experiment.experiment_id])}
    assert sorted(mlflow_runs) == ["concat", "late"]
    for job, fusion in (("0", "concat"), ("1", "late")):
        run = sweep_dir / job
        record = run_json(run)
        best = record["monitor"]["best"]
        test_metrics = json.loads((run / "test_metrics.json").read_text())
        assert {"test/acc", "test/acc[-image]", "test/acc[-audio]", "baseline/test/acc"} <= set(test_metrics)

        wandb = wandb_offline_run(run, record["wandb_run_id"])
        config, summary = wandb["config"], wandb["summary"]
        assert (wandb["group"], wandb["job_type"]) == (sweep_dir.name, "train") and f"fusion={fusion}" in wandb["name"]
        assert list(wandb["tags"]) == ["dash", "avdigits"]
        assert config["choice/fusion"] == fusion and config["choice/encoder/image"] == "lenet"
        assert config["choice/encoder/audio"] == "gru" and config["choice/experiment"] == "null"
        total, trainable = config["model/params/total"], config["model/params/trainable"]
        assert total == trainable > 1000
        assert config["modalities"] == "image,audio" and config["seed"] == 1234
        assert summary["val/acc_best"] == pytest.approx(best)
        for name, value in test_metrics.items():  # model, modality ablations and baseline
            assert summary[name] == pytest.approx(value), name

        board = tensorboard_hparams(run)
        hparams, metrics = board["hparams"], board["metrics"]
        assert hparams["choice/fusion"] == fusion and hparams["choice/encoder/image"] == "lenet"
        assert (hparams["model/params/total"], hparams["model/params/trainable"]) == (total, trainable)
        assert hparams["modalities"] == "image,audio" and hparams["seed"] == 1234
        assert metrics["val/acc_best"] == pytest.approx(best)
        assert set(metrics) == {"val/acc_best", *test_metrics}
        for name, value in test_metrics.items():
            assert metrics[name] == pytest.approx(value), name

        mlflow_run = mlflow_runs[fusion]
        params, mlflow_metrics = mlflow_run.data.params, mlflow_run.data.metrics
        assert mlflow_run.data.tags["mlflow.runName"] == wandb["name"]
        assert mlflow_run.data.tags["dash"] == "true"
        assert params["choice/encoder/image"] == "lenet" and params["model/params/total"] == str(total)
        assert mlflow_metrics["val/acc_best"] == pytest.approx(best)
        for name, value in test_metrics.items():
            assert mlflow_metrics[mlflow_metric_name(name)] == pytest.approx(value), name
