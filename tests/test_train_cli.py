"""mmfw-train behaviour around training: precision checks, resume folders, failures of single runs."""

from __future__ import annotations

import hydra
import pytest
import torch
from conftest import TINY_AVDIGITS, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException

from mmfw.runs.config import ConfigError, check_added_keys, check_precision
from mmfw.runs.run_folder import read_run_json
from mmfw.runs.sweep import run_job
from mmfw.train import CONFIG_DIR, train


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
    cfg = compose_train(overrides, tmp_path)
    score = train(cfg)
    record = read_run_json(tmp_path)
    assert record["status"] == "completed" and score == record["monitor"]["best"]
    assert all(value == value for value in record["test_metrics"].values())  # no NaN


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize("preset", ["gpu", "ddp"])
def test_a_gpu_preset_without_a_gpu_names_what_to_use(preset, tmp_path):
    cfg = compose_train([f"trainer={preset}"], tmp_path)
    with pytest.raises(ConfigError, match=r"trainer\.accelerator=gpu .*no GPU.*trainer=cpu.*trainer=ddp_cpu"):
        run_job(train, cfg)
    assert read_run_json(tmp_path)["status"] == "failed"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+foo=1", r"`\+foo=1` adds `foo`, which nothing reads"),
        ("+trainer_typo.x=1", r"`\+trainer_typo.x=1` .*did you mean `trainer`"),
        ("+monitor.metrc=val/acc", r"`\+monitor.metrc=val/acc` .*did you mean `monitor.metric`"),
        ("+callbacks.patience=3", r"`\+callbacks.patience=3` adds `callbacks.patience`, which nothing reads"),
        ("++foo=1", r"`\+\+foo=1` adds `foo`, which nothing reads"),
        ("++monitor.metrc=val/acc", r"`\+\+monitor.metrc=val/acc` .*did you mean `monitor.metric`"),
    ],
)
def test_an_added_key_that_nothing_reads_is_an_error(override, message, tmp_path):
    """``+key`` and ``++key`` alike: a key that no constructor, interpolation or mmfw reads is refused."""
    cfg = compose_train([override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_added_keys(cfg, [override])


def test_a_key_added_under_a_node_set_to_null_is_an_error_naming_the_null(tmp_path):
    overrides = ["+callbacks.rich_progress_bar.console_kwargs.force_terminal=true", "callbacks.rich_progress_bar=null"]
    cfg = compose_train(overrides, tmp_path)
    with pytest.raises(
        ConfigError, match=r"adds `callbacks\.rich_progress_bar\.console_kwargs.*`callbacks\.rich_progress_bar` is null"
    ):
        check_added_keys(cfg, overrides)


def test_force_added_keys_that_exist_or_are_read_are_accepted(tmp_path):
    overrides = [
        "++trainer.enable_progress_bar=false",  # a Trainer argument the preset does not set
        "++trainer.max_epochs=2",  # an existing key: ++ sets it
        "++monitor.metric=val/loss",  # an existing key read by mmfw, not by a constructor
        "++seed=3",
        "++trainer.max_epoch=3",  # under a _target_: its constructor refuses it (see below)
        "++lr=0.01",  # a variable that an interpolation reads
        "model.optimizer.lr=${lr}",
    ]
    check_added_keys(compose_train(overrides, tmp_path), overrides)


def test_added_keys_that_are_read_are_accepted(tmp_path):
    overrides = [
        "+datamodule.columns={image: {kind: image, column: image}}",  # a constructor argument
        "+encoder/text@encoder.caption=transformer",  # a config group added at a package
        "+trainer.enable_model_summary=false",
        "+callbacks.swa={_target_: pytorch_lightning.callbacks.StochasticWeightAveraging, swa_lrs: 0.01}",
        "+lr=0.01",  # a variable that an interpolation reads
        "model.optimizer.lr=${lr}",
    ]
    check_added_keys(compose_train(overrides, tmp_path), overrides)


def test_keys_added_under_a_target_are_checked_by_its_constructor(tmp_path):
    for override, node in [
        ("+trainer.max_epoch=3", "trainer"),
        ("++trainer.max_epoch=3", "trainer"),
        ("+datamodule.batchsize=3", "datamodule"),
    ]:
        cfg = compose_train([override], tmp_path)
        with pytest.raises(InstantiationException, match=r"unexpected keyword argument '(max_epoch|batchsize)'"):
            hydra.utils.instantiate(cfg[node])
