"""``mmfw-train``: compose the config, build data + model from it, fit, test the best checkpoint.

mmfw-train fusion=late modalities=[image] trainer.max_epochs=10
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from mmfw import run_folder

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# A short random id in run folder names keeps them unique when many jobs start in the same second.
OmegaConf.register_new_resolver("mmfw.uid", lambda: uuid.uuid4().hex[:6], use_cache=True, replace=True)


class ConfigError(ValueError):
    """A config combination that cannot work; the message names the key to change."""


def check_modalities(cfg: DictConfig) -> None:
    """Every modality in ``modalities`` needs an encoder config at ``encoder.<modality>``."""
    modalities = list(cfg.modalities)
    if not modalities:
        raise ConfigError("`modalities` is empty: list at least one, e.g. modalities=[image]")
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"`modalities` lists a modality twice: {modalities}")
    encoders = cfg.get("encoder") or {}
    for name in modalities:
        if encoders.get(name) is None:
            raise ConfigError(
                f"modality {name!r} in `modalities` has no encoder: add one with "
                f"`+encoder/<kind>@encoder.{name}=<config>` (configured encoders: {sorted(encoders)}) "
                f"or remove {name!r} from `modalities`"
            )


def build(cfg: DictConfig, stage: str = "fit") -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Datamodule first (it knows the task and input shapes), then encoders, fusion and the module."""
    check_modalities(cfg)
    datamodule = hydra.utils.instantiate(cfg.datamodule)
    datamodule.prepare_data()
    datamodule.setup(stage)
    task = datamodule.task
    with open_dict(cfg):
        # Data-derived sizes reach configs by interpolation (e.g. fusion.num_outputs: ${data.num_outputs}).
        cfg.data = {"kind": task.kind, "num_outputs": task.num_outputs, "class_names": task.class_names}
    encoders = {
        name: hydra.utils.instantiate(cfg.encoder[name], **datamodule.encoder_inputs.get(name, {}))
        for name in datamodule.modalities
    }
    model_factory = hydra.utils.instantiate(cfg.model, _partial_=True)
    model = model_factory(encoders=encoders, fusion=hydra.utils.instantiate(cfg.fusion), task=task)
    return datamodule, model


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a config group like ``callbacks`` or ``logger``."""
    return [hydra.utils.instantiate(node) for node in (group or {}).values() if node is not None]


def train(cfg: DictConfig) -> float | None:
    """Fit and test; returns the best value of ``monitor.metric`` (what sweeps optimise)."""
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model = build(cfg)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=loggers or False
    )
    record_start(cfg, run_dir, loggers, skipped=getattr(datamodule, "skipped", None) or [])
    try:
        trainer.fit(model, datamodule=datamodule)
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        test_metrics = {}
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best)
            test_metrics = metrics_with_prefix(trainer, "test/")
    except BaseException as error:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        if rank_zero_only.rank == 0:
            run_folder.finish_run(run_dir, status=status, error=f"{type(error).__name__}: {error}")
        raise
    best_key = f"{cfg.monitor.metric}_best"
    score = trainer.callback_metrics.get(best_key, trainer.callback_metrics.get(cfg.monitor.metric))
    score = float(score) if score is not None else None
    if rank_zero_only.rank == 0:
        if test_metrics:
            (run_dir / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2) + "\n")
        run_folder.finish_run(
            run_dir,
            status="completed",
            best_checkpoint=os.path.relpath(best, run_dir) if best else None,
            monitor={"metric": cfg.monitor.metric, "mode": cfg.monitor.mode, "best": score},
            test_metrics=test_metrics,
        )
        log.info("Run folder: %s", run_dir)
    return score


def metrics_with_prefix(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(prefix)}


@rank_zero_only
def record_start(cfg: DictConfig, run_dir: Path, loggers: list[Any], skipped: list[dict]) -> None:
    """Write the resolved config, git commit and versions into the run folder and hand them to every logger.

    ``skipped`` lists the samples the datamodule skipped as bad (``on_bad_sample: skip``); they are written to
    ``skipped_samples.json`` so nothing is dropped silently.
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    run_folder.start_run(run_dir, resolved_config_yaml=OmegaConf.to_yaml(resolved), overrides=overrides)
    if skipped:
        (run_dir / "skipped_samples.json").write_text(json.dumps(skipped, indent=2, default=str) + "\n")
        log.warning("%d bad samples were skipped; see %s", len(skipped), run_dir / "skipped_samples.json")
        run_folder.update_run_json(run_dir, skipped_samples=len(skipped))
    wandb_id = None
    for logger in loggers:
        logger.log_hyperparams({**resolved, "overrides": overrides, "git": run_folder.git_state()})
        if isinstance(logger, WandbLogger):
            wandb_id = logger.experiment.id
    if wandb_id:
        run_folder.update_run_json(run_dir, wandb_run_id=wandb_id)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
