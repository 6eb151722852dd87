"""mmfw-train behaviour around training: precision checks, resume folders, failures of single runs."""

from __future__ import annotations

import pytest
from conftest import TINY_AVDIGITS, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mmfw.run_folder import read_run_json
from mmfw.sweep import run_job
from mmfw.train import CONFIG_DIR, ConfigError, check_precision, train


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="16-mixed needs a CUDA GPU.*bf16-mixed"):
        check_precision(compose_train(["trainer=cpu", "trainer.precision=16-mixed"], tmp_path).trainer)
    for precision in ("bf16-mixed", "32-true"):
        check_precision(compose_train(["trainer=cpu", f"trainer.precision={precision}"], tmp_path).trainer)
    check_precision(compose_train(["trainer=gpu", "trainer.precision=16-mixed"], tmp_path).trainer)


def test_resume_continues_in_the_run_folder_and_keeps_its_config():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        fresh = compose("train", return_hydra_config=True)
        resumed = compose("train", overrides=["resume=logs/train/runs/x"], return_hydra_config=True)
    assert fresh.hydra.output_subdir == ".hydra" and "/runs/" in fresh.hydra.run.dir
    assert resumed.hydra.run.dir == "logs/train/runs/x"
    assert resumed.hydra.output_subdir is None  # Hydra must not overwrite the run's .hydra/config.yaml


def test_a_single_run_that_fails_raises_and_records_why(tmp_path):
    cfg = compose_train(["modalities=[image,text]"], tmp_path)
    with pytest.raises(ConfigError, match="'text'"):
        run_job(train, cfg)
    record = read_run_json(tmp_path)
    assert record["status"] == "failed" and record["error"].startswith("ConfigError: modality 'text'")


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_cpu(tmp_path, avdigits_raw):
    overrides = [*TINY_AVDIGITS, "trainer=cpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "logger=csv"]
    cfg = compose_train([*overrides, "callbacks.rich_progress_bar=null"], tmp_path)
    score = train(cfg)
    record = read_run_json(tmp_path)
    assert record["status"] == "completed" and score == record["monitor"]["best"]
    assert all(value == value for value in record["test_metrics"].values())  # no NaN
