"""Every config shipped in conf/ is composed and instantiated (tiny sizes, CPU)."""

from __future__ import annotations

import inspect
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_AVDIGITS, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torchmetrics import MaxMetric, MinMetric

from mmfw.contracts import TaskSpec
from mmfw.encoders import LeNetEncoder
from mmfw.runs.config import ConfigError, apply_defaults, check_modalities, instantiate_group
from mmfw.runs.resolvers import monitor_mode
from mmfw.train import CONFIG_DIR, build

CONF = Path(CONFIG_DIR)
# Overrides that make a group's config composable on its own (required values, CPU-only machines).
NEEDS = {
    "encoder/image/timm": ["encoder.image.model_name=resnet18"],
    "datamodule/manifest": [
        "datamodule.manifest=samples.csv",
        "datamodule.target=label",
        "+datamodule.columns={t: {kind: text, column: t}}",
    ],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def forward_one_batch(datamodule, model) -> torch.Tensor:
    batch = next(iter(datamodule.train_dataloader()))
    model.eval()
    with torch.no_grad():
        return model(batch)


@pytest.mark.parametrize(
    "group,name",
    [(g, n) for g in ("encoder/image", "encoder/audio", "fusion", "model") for n in options(g)],
)
def test_model_configs_build_and_train(group, name, tmp_path, avdigits_raw):
    """Each model-side config builds on real (tiny) AV-digits and takes a few optimiser steps."""
    overrides = [f"{group}={name}", *NEEDS.get(f"{group}/{name}", []), *TINY_AVDIGITS]
    cfg = compose_train(overrides, tmp_path)
    datamodule, model = build(cfg)
    fit_a_few_steps(datamodule, model, tmp_path, steps=3)
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters the loss never reaches: {no_grad}"
    logits = forward_one_batch(datamodule, model)
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()


def fit_a_few_steps(datamodule, model, tmp_path, *, steps: int) -> pl.Trainer:
    """``steps`` optimiser steps and one validation batch; the step loss must be finite."""
    trainer = pl.Trainer(
        max_steps=steps,
        log_every_n_steps=1,  # train/loss_step is logged at the log points
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    return trainer


# objective=preference trains on pairs of a manifest's rows: tests/objectives/test_preference_runs.py builds it.
@pytest.mark.parametrize("name", [n for n in options("objective") if n != "preference"])
def test_objective_configs_build_and_train(name, tmp_path, avdigits_raw):
    """Each objective builds on tiny AV-digits and takes a few optimiser steps; its monitor is one it logs."""
    cfg = compose_train([f"objective={name}", *TINY_AVDIGITS], tmp_path)
    datamodule, model = build(cfg)
    trainer = fit_a_few_steps(datamodule, model, tmp_path, steps=5)
    assert torch.isfinite(trainer.callback_metrics[cfg.monitor.metric])


@pytest.mark.parametrize("name", options("datamodule"))
def test_datamodule_configs_compose(name, tmp_path):
    cfg = compose_train([f"datamodule={name}", *NEEDS.get(f"datamodule/{name}", [])], tmp_path)
    target = hydra.utils.get_class(cfg.datamodule._target_)
    kwargs = {k: v for k, v in cfg.datamodule.items() if k != "_target_"}
    inspect.signature(target).bind(**kwargs)  # every key is a real constructor argument


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_configs(name, tmp_path):
    cfg = compose_train([f"trainer={name}"], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        target = hydra.utils.get_class(cfg.trainer._target_)
        inspect.signature(target).bind(**{k: v for k, v in cfg.trainer.items() if k != "_target_"})
        return
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("name", options("logger"))
def test_logger_configs(name, tmp_path):
    cfg = compose_train([f"logger={name}"], tmp_path)
    loggers = instantiate_group(cfg.logger)
    kinds = {type(logger).__name__ for logger in loggers}
    assert "CSVLogger" in kinds, "a CSV log is always written"


@pytest.mark.parametrize("name", options("callbacks"))
def test_callback_configs(name, tmp_path):
    cfg = compose_train([f"callbacks={name}"], tmp_path)
    callbacks = instantiate_group(cfg.get("callbacks"))
    if name == "default":
        assert {type(c).__name__ for c in callbacks} == {
            "ModelCheckpoint",
            "EarlyStopping",
            "RichProgressBar",
            "LearningRateMonitor",
            # What resume= needs (mmfw.runs.callbacks); the last checkpoint is a second, unmonitored ModelCheckpoint.
            "EpochSeed",
            "CheckpointOnInterrupt",
            "ConfiguredOptimization",
        }
        monitored = {c.monitor for c in callbacks if getattr(c, "monitor", None) is not None}
        assert monitored == {cfg.monitor.metric}


@pytest.mark.parametrize("name", options("debug"))
def test_debug_configs_compose(name, tmp_path):
    cfg = compose_train([f"debug={name}"], tmp_path)
    hydra.utils.instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_configs_build(name, tmp_path, avdigits_raw):
    cfg = compose_train([f"experiment={name}"], tmp_path)
    if not cfg.datamodule._target_.endswith("AVDigitsDataModule"):
        pytest.skip("experiment on another dataset: composed only (manifest_* train in tests/test_export_avdigits.py)")
    build(compose_train([f"experiment={name}", *TINY_AVDIGITS], tmp_path))


def test_eval_config_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=["run=some/folder"])
    assert cfg.run == "some/folder" and cfg.ckpt == "best"


def test_modality_without_encoder_names_the_key(tmp_path):
    cfg = compose_train(["modalities=[image,audio,text]"], tmp_path)
    with pytest.raises(ConfigError, match=r"modality 'text' .*encoder\.text"):
        check_modalities(cfg)


def test_unknown_modality_in_data_names_the_key(tmp_path):
    cfg = compose_train(["modalities=[image,smell]", "+encoder/image@encoder.smell=lenet"], tmp_path)
    # Hydra wraps the datamodule's ValueError; the message still names the key and the bad modality.
    with pytest.raises(InstantiationException, match=r"`modalities`.*smell"):
        build(cfg)


def test_resolved_config_has_no_missing_values(tmp_path):
    cfg = compose_train([], tmp_path)
    OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=True)
    assert cfg.seed == 1234 and cfg.modalities is None
    apply_defaults(cfg)  # null: every configured encoder
    assert list(cfg.modalities) == ["image", "audio"] and list(cfg.encoder) == ["image", "audio"]
    assert "encoder_defaults" not in cfg


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ([], "max"),
        (["monitor.metric=val/loss"], "min"),
        (["monitor.metric=val/f1_macro"], "max"),
        (["monitor.metric=val/loss", "monitor.mode=max"], "max"),  # set by the user: kept
    ],
)
def test_monitor_mode_follows_the_metric_unless_set(overrides, mode, tmp_path):
    cfg = compose_train(overrides, tmp_path)
    assert cfg.monitor.mode == mode
    callbacks = instantiate_group(cfg.callbacks)
    watching = [c for c in callbacks if isinstance(c, ModelCheckpoint | EarlyStopping) and c.monitor is not None]
    assert len(watching) == 2 and all(c.mode == mode for c in watching)
    if cfg.monitor.metric == "auto":  # build() chooses it from the data: val/acc for this multiclass task
        cfg.monitor.metric = "val/acc"
    encoders = {name: LeNetEncoder(1, channels=(4,), out_dim=8) for name in ("image", "audio")}
    module = hydra.utils.instantiate(cfg.model, _partial_=True)(
        encoders=encoders, fusion=hydra.utils.instantiate(cfg.fusion), task=TaskSpec("multiclass", 3, ["a", "b", "c"])
    )
    assert isinstance(module.val_best, MaxMetric if mode == "max" else MinMetric)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        sweep = compose("train", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)
    assert sweep.hydra.sweeper.direction == {"max": "maximize", "min": "minimize"}[mode]


@pytest.mark.parametrize(
    ("metric", "mode"),
    [("val/loss", "min"), ("val/mse", "min"), ("val/rmse", "min"), ("val/error_rate", "min"), ("val/ece", "min"),
     ("val/bce_loss", "min"), ("val/acc", "max"), ("val/f1_macro", "max"), ("val/auroc", "max"),
     ("val/median_rank_audio_to_image", "min"), ("val/recall@1", "max"), ("val/pair_acc", "max"),
     ("val/pair_ece", "min")],
)  # fmt: skip
def test_monitor_mode_of_each_metric(metric, mode):
    assert monitor_mode(metric) == mode
