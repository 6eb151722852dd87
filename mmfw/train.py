"""``mmfw-train``: compose the config, build data + model from it, fit, test the best checkpoint.

mmfw-train fusion=late modalities=[image] trainer.max_epochs=10
mmfw-train -m fusion=concat,late seed=0,1             # a sweep; failed jobs are recorded, the others run
mmfw-train -m hparams_search=optuna                   # Optuna (TPE), study stored in the sweep folder
mmfw-train resume=logs/train/runs/<run>               # continue a run from its last checkpoint

This module is imported before Hydra reads the command line: it imports nothing heavy at the top, so ``--help``,
``--cfg job`` and config errors answer without loading torch (tests/test_startup.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from mmfw.runs import job, resolvers, sweep, usage
from mmfw.runs.config import CONFIG_DIR, apply_defaults, check_modalities, default_monitor

if TYPE_CHECKING:
    import pytorch_lightning as pl

resolvers.register()


def build(cfg: DictConfig, stage: str = "fit") -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Datamodule first (it knows the task and input shapes), then encoders, fusion and the module.

    ``encoder.<modality>.frozen=true`` freezes any encoder, ``encoder.<modality>.init_from=<run folder>`` starts it
    from that run's weights (:mod:`mmfw.objectives.transfer`). ``objective`` (default classify) is handed to the
    module; its ``pairs`` node (objective=preference) wraps the sample datamodule into a pair datamodule. With
    ``feature_cache`` (default true) the returned datamodule is wrapped so that frozen encoders' outputs are computed
    once and cached (:mod:`mmfw.feature_cache`; not for pairs).
    """
    from mmfw import feature_cache  # torch: once a run is really built
    from mmfw.objectives.transfer import load_encoder_weights

    apply_defaults(cfg)
    check_modalities(cfg)
    objective = OmegaConf.to_container(cfg.objective, resolve=True) if cfg.get("objective") is not None else None
    pairs = objective.pop("pairs", None) if objective is not None else None
    datamodule = hydra.utils.instantiate(cfg.datamodule)
    datamodule.prepare_data()
    datamodule.setup(stage)
    if pairs is not None:
        datamodule = hydra.utils.instantiate(pairs)(samples=datamodule)
        datamodule.setup(stage)
    task = datamodule.task
    default_monitor(cfg, datamodule)
    with open_dict(cfg):
        # What the data turned out to be, in the saved config (for reading; the model gets it from the datamodule).
        cfg.data = {"kind": task.kind, "num_outputs": task.num_outputs, "class_names": task.class_names}
    encoders, configs = {}, {}
    for name in datamodule.modalities:
        # `frozen` is common to every encoder and read here, not by its constructor.
        configs[name] = OmegaConf.to_container(cfg.encoder[name], resolve=True)
        frozen = bool(configs[name].pop("frozen", False))
        init_from = configs[name].pop("init_from", None)
        encoders[name] = hydra.utils.instantiate(configs[name], **datamodule.encoder_inputs.get(name, {}))
        if init_from:
            load_encoder_weights(encoders[name], name, init_from, configs[name])
        if frozen:
            feature_cache.freeze(encoders[name])
    model_factory = hydra.utils.instantiate(cfg.model, _partial_=True)
    model = model_factory(
        encoders=encoders,
        fusion=hydra.utils.instantiate(cfg.fusion),
        task=task,
        objective=hydra.utils.instantiate(objective) if objective is not None else None,
    )
    if cfg.get("feature_cache", True) and pairs is None:
        datamodule = feature_cache.wrap_frozen(
            datamodule,
            {name: model.encoders[name] for name in encoders},
            configs={name: {**configs[name], **datamodule.encoder_inputs.get(name, {})} for name in configs},
            cache_dir=Path(cfg.paths.cache_dir) / "features",
        )
    return datamodule, model


def train(cfg: DictConfig) -> float | None:
    """Fit and test; returns the best value of ``monitor.metric`` (what sweeps optimise).

    With ``resume=<run folder>`` the run continues from that folder's last checkpoint (see ``mmfw.runs.resume``).
    Whatever stops it, run.json says how: ``completed``, ``failed`` with the error, or ``interrupted``
    (``mmfw.runs.job``).
    """
    return job.run(cfg, build=build)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def run(cfg: DictConfig) -> float | None:
    return sweep.run_job(train, cfg)


def main() -> float | None:
    """The ``mmfw-train`` console script: ``--help`` is answered from conf/ before Hydra composes anything
    (:mod:`mmfw.runs.usage`, ~4x faster than Hydra's); everything else, ``--hydra-help`` included, goes to Hydra."""
    if usage.wants_help(sys.argv[1:]):
        print(usage.help_text(Path(CONFIG_DIR), "train", command="mmfw-train"))
        return None
    return run()


if __name__ == "__main__":
    main()
