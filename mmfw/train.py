"""``mmfw-train``: compose the config, build data + model from it, fit, test the best checkpoint.

mmfw-train fusion=late modalities=[image] trainer.max_epochs=10
mmfw-train -m fusion=concat,late seed=0,1             # a sweep; failed jobs are recorded, the others run
mmfw-train -m hparams_search=optuna                   # Optuna (TPE), study stored in the sweep folder
mmfw-train resume=logs/train/runs/<run>               # continue a run from its last checkpoint
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmfw import feature_cache, resolvers, resume, run_folder, sweep
from mmfw.config_checks import check_value_types
from mmfw.loggers import finish_wandb
from mmfw.threads import apply_thread_policy

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

resolvers.register()


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


def check_added_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """A key added with ``+key=value`` must be read by something; otherwise a typo would be silently ignored.

    Read are: keys in or under a node built from ``_target_`` (its constructor rejects unknown arguments), keys an
    interpolation refers to (``+lr=0.01 model.optimizer.lr=${lr}``) and Hydra's own. Config group overrides
    (``+encoder/text@encoder.caption=transformer``, ``+debug=limit``) add whole config files and are not checked.
    """
    text = OmegaConf.to_yaml(cfg)  # unresolved: interpolations stay as written
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        group = override.package is not None or "/" in key or (Path(CONFIG_DIR) / key).is_dir()
        if not override.is_add() or group or key.startswith("hydra."):
            continue
        parts = key.split(".")
        nodes = [OmegaConf.select(cfg, ".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        if any(isinstance(node, DictConfig) and "_target_" in node for node in nodes):
            continue
        if "${" + key + "}" in text or "${" + key + "." in text:
            continue
        # The added part starts at the first node that holds nothing but the added path: suggest a near name there.
        first = next(i for i in range(len(parts)) if i == len(parts) - 1 or len(nodes[i]) == 1)
        parent = cfg if first == 0 else nodes[first - 1]
        near = difflib.get_close_matches(parts[first], [k for k in parent if k != parts[first]], n=1)
        hint = f"did you mean `{'.'.join([*parts[:first], near[0]])}`?" if near else "check the spelling."
        raise ConfigError(
            f"`{override.input_line}` adds `{key}`, which nothing reads (it would be silently ignored): {hint} "
            "Add keys with `+` only inside a node with `_target_` (they are constructor arguments) or use them "
            "in an interpolation."
        )


MINORITY_AUROC = 0.35
"""``monitor.metric=auto`` monitors ``val/auroc`` for a binary task whose rarer class is below this share of the
training split (accuracy rewards predicting the majority there), ``val/acc`` for other classification tasks and
``val/mse`` for regression."""


def apply_defaults(cfg: DictConfig) -> None:
    """Fill in what the least config leaves out, in place, before anything is built.

    ``modalities: null`` becomes every modality the datamodule configures (a manifest's ``columns``, in order),
    else every configured ``encoder``. A modality of ``columns`` without ``encoder.<name>`` gets
    ``encoder_defaults.<kind>`` (its ``kind`` there). Then ``encoder`` keeps only the
    run's modalities and ``encoder_defaults`` is dropped, so the saved config lists just the encoders used.
    """
    columns = cfg.datamodule.get("columns") or {}
    with open_dict(cfg):
        if cfg.get("modalities") is None:
            cfg.modalities = list(columns) or list(cfg.get("encoder") or {})
        defaults = cfg.get("encoder_defaults") or {}
        encoders = cfg.get("encoder") or {}
        chosen = {}
        for name in cfg.modalities:
            kind = (columns.get(name) or {}).get("kind")
            node = encoders.get(name)
            if node is None and kind is not None and defaults.get(kind) is not None:
                node = defaults[kind]
            if node is not None:
                chosen[name] = node
        cfg.encoder = chosen
        cfg.pop("encoder_defaults", None)


def default_monitor(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Resolve ``monitor.metric=auto`` from the task and the training split's labels (see MINORITY_AUROC)."""
    if cfg.monitor.metric != "auto":
        return
    task = datamodule.task
    metric = {"regression": "val/mse"}.get(task.kind, "val/acc")
    if task.kind == "binary":
        target = getattr(datamodule.train_dataloader().dataset, "target", None)
        if target is not None and len(target):
            positive = float(torch.as_tensor(target, dtype=torch.float32).mean())
            metric = "val/auroc" if min(positive, 1 - positive) < MINORITY_AUROC else metric
    log.info("monitor.metric=auto: monitoring %s (%s task)", metric, task.kind)
    cfg.monitor.metric = metric


def build(cfg: DictConfig, stage: str = "fit") -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Datamodule first (it knows the task and input shapes), then encoders, fusion and the module.

    ``encoder.<modality>.frozen=true`` freezes any encoder. With ``feature_cache`` (default true) the returned
    datamodule is wrapped so that frozen encoders' outputs are computed once and cached (:mod:`mmfw.feature_cache`).
    """
    apply_defaults(cfg)
    check_modalities(cfg)
    datamodule = hydra.utils.instantiate(cfg.datamodule)
    datamodule.prepare_data()
    datamodule.setup(stage)
    task = datamodule.task
    default_monitor(cfg, datamodule)
    with open_dict(cfg):
        # Data-derived sizes reach configs by interpolation (e.g. fusion.num_outputs: ${data.num_outputs}).
        cfg.data = {"kind": task.kind, "num_outputs": task.num_outputs, "class_names": task.class_names}
    encoders, configs = {}, {}
    for name in datamodule.modalities:
        # `frozen` is common to every encoder and read here, not by its constructor.
        configs[name] = OmegaConf.to_container(cfg.encoder[name], resolve=True)
        frozen = bool(configs[name].pop("frozen", False))
        encoders[name] = hydra.utils.instantiate(configs[name], **datamodule.encoder_inputs.get(name, {}))
        if frozen:
            feature_cache.freeze(encoders[name])
    model_factory = hydra.utils.instantiate(cfg.model, _partial_=True)
    model = model_factory(encoders=encoders, fusion=hydra.utils.instantiate(cfg.fusion), task=task)
    if cfg.get("feature_cache", True):
        datamodule = feature_cache.wrap_frozen(
            datamodule,
            {name: model.encoders[name] for name in encoders},
            configs={name: {**configs[name], **datamodule.encoder_inputs.get(name, {})} for name in configs},
            cache_dir=Path(cfg.paths.cache_dir) / "features",
        )
    return datamodule, model


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a config group like ``callbacks`` or ``logger``."""
    return [hydra.utils.instantiate(node) for node in (group or {}).values() if node is not None]


def train(cfg: DictConfig) -> float | None:
    """Fit and test; returns the best value of ``monitor.metric`` (what sweeps optimise).

    With ``resume=<run folder>`` the run continues from that folder's last checkpoint (see ``mmfw.resume``).
    Whatever stops it, run.json says how: ``completed``, ``failed`` with the error, or ``interrupted``.
    """
    run_dir = Path(cfg.paths.output_dir)
    trainer = checkpoint = saved = None
    loggers: list[Any] = []
    if cfg.get("resume"):
        # Outside the try: a resume that cannot start must not mark the run it points at as failed.
        cfg, checkpoint = resume.load_run_to_resume(cfg, sweep.task_overrides())
        if checkpoint is not None:
            saved = run_folder.load_checkpoint(checkpoint, mmap=True)  # refuses a checkpoint that would run code
    try:
        check_added_keys(cfg, sweep.task_overrides())
        check_value_types(cfg, sweep.task_overrides())
        threads = apply_thread_policy(cfg.get("threads", "auto"), cfg.trainer, launcher=launcher_config())
        torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "highest"))
        check_accelerator(cfg.trainer)
        check_precision(cfg.trainer)
        pl.seed_everything(cfg.seed, workers=True)
        datamodule, model = build(cfg)
        if checkpoint is not None:
            resume.check_checkpoint_fits(
                model, checkpoint, saved, max_epochs=cfg.trainer.get("max_epochs"), overrides=sweep.task_overrides()
            )
        loggers = instantiate_group(cfg.get("logger"))
        if checkpoint is not None:
            resume.keep_csv_history(loggers, step=int(saved.get("global_step", 0)))
            saved = None  # Lightning loads the checkpoint itself in fit()
        callbacks = [
            *instantiate_group(cfg.get("callbacks")),
            *resume.fault_tolerance_callbacks(seed=cfg.seed, checkpoint_dir=run_dir / run_folder.CHECKPOINT_DIR),
        ]
        trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        record_start(
            cfg,
            run_dir,
            loggers,
            skipped=getattr(datamodule, "skipped", None) or [],
            resumed=checkpoint,
            truncated=getattr(datamodule, "truncated", None) or {},
        )
        if rank_zero_only.rank == 0:
            cached = isinstance(datamodule, feature_cache.FeatureCacheDataModule)
            extra = {"feature_cache": datamodule.describe()} if cached else {}
            run_folder.update_run_json(run_dir, threads=threads, **extra)
        write_splits(datamodule, run_dir)
        # weights_only: checkpoints are data; torch's default can be switched off by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        checkpointer = trainer.checkpoint_callback
        best = checkpointer.best_model_path if checkpointer is not None and checkpointer.best_model_path else None
        test_metrics = {}
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            test_metrics = metrics_with_prefix(trainer, "test/")
        score = best_score(trainer, cfg.monitor.metric)
        if rank_zero_only.rank == 0:  # inside the try: a disk that is full now still gets the run marked failed
            if test_metrics:
                (run_dir / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2) + "\n")
            if isinstance(datamodule, feature_cache.FeatureCacheDataModule):
                run_folder.update_run_json(run_dir, feature_cache=datamodule.describe())  # with this run's lookups
            run_folder.finish_run(
                run_dir,
                status="completed",
                best_checkpoint=os.path.relpath(best, run_dir) if best else None,
                monitor={"metric": cfg.monitor.metric, "mode": cfg.monitor.mode, "best": score},
                test_metrics=test_metrics,
            )
            log.info("Run folder: %s", run_dir)
            if cfg.get("baseline"):
                run_linear_baseline(run_dir, datamodule, loggers)
    except resume.ResumeError:
        raise  # refused before anything in the run folder changed: it keeps its own record
    except BaseException as error:
        record_stop(run_dir, error, trainer)
        finish_wandb(loggers, failed=True)
        if isinstance(error, SIGTERMException):
            # Lightning's SIGTERMException exits with status 0; a job stopped by its scheduler did not succeed.
            raise SystemExit(128 + signal.SIGTERM) from error
        raise
    finish_wandb(loggers, failed=False)
    return score


def launcher_config() -> dict[str, Any] | None:
    """The Hydra launcher's config (a parallel launcher's ``n_jobs`` shares the cores); None outside Hydra."""
    try:
        return OmegaConf.to_container(HydraConfig.get().launcher, resolve=True)
    except ValueError:  # no Hydra runtime (train() called directly)
        return None


def run_linear_baseline(run_dir: Path, datamodule: pl.LightningDataModule, loggers: list[Any]) -> None:
    """``baseline=true``: the linear baseline on the run's own splits (mmfw.baseline), its test metrics merged into
    the run folder and the W&B summary next to the model's."""
    from mmfw.baseline import run_baseline  # imports this module: only when asked for

    metrics = run_baseline(run_dir, datamodule=datamodule)["test_metrics"]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(metrics)


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """A GPU preset on a machine without one fails before any data is built, saying what to use instead."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        if accelerator == "gpu" and torch.backends.mps.is_available():
            return
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu, trainer=ddp) but torch sees no GPU "
            f"(torch {torch.__version__}, CUDA available: no): use trainer=cpu, or trainer=ddp_cpu for "
            "data-parallel training on CPU processes"
        )


def check_precision(trainer_cfg: DictConfig) -> None:
    """float16 autocast needs a GPU; Lightning would quietly train in bfloat16 on a CPU instead."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if str(trainer_cfg.get("precision")) in ("16-mixed", "16") and on_cpu:
        raise ConfigError(
            "trainer.precision=16-mixed needs a CUDA GPU (trainer=gpu); on a CPU use trainer.precision=bf16-mixed "
            "or 32-true"
        )


def best_score(trainer: pl.Trainer, metric: str) -> float | None:
    """The best ``metric`` of the whole run; the checkpoint callback's record survives a resume."""
    checkpointer = trainer.checkpoint_callback
    score = (
        getattr(checkpointer, "best_model_score", None) if getattr(checkpointer, "monitor", None) == metric else None
    )
    if score is None:
        score = trainer.callback_metrics.get(f"{metric}_best", trainer.callback_metrics.get(metric))
    return float(score) if score is not None else None


def metrics_with_prefix(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(prefix)}


@rank_zero_only
def write_splits(datamodule: pl.LightningDataModule, run_dir: Path) -> None:
    """``<run>/splits.csv``: which split each manifest row is in, for a datamodule that can tell
    (``write_splits(path)``)."""
    writer = getattr(datamodule, "write_splits", None)
    if callable(writer):
        writer(run_dir / "splits.csv")


@rank_zero_only
def record_start(
    cfg: DictConfig,
    run_dir: Path,
    loggers: list[Any],
    skipped: list[dict],
    resumed: Path | None = None,
    truncated: dict[str, int] | None = None,
) -> None:
    """Write the resolved config, git commit and versions into the run folder and hand them to every logger.

    ``skipped`` lists the samples the datamodule skipped as bad (``on_bad_sample: skip``); they are written to
    ``skipped_samples.json`` so nothing is dropped silently. ``truncated`` counts, per text modality, the texts
    its tokenizer cut (run.json ``truncated``).
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    overrides = sweep.task_overrides()
    if cfg.get("resume"):
        run_folder.resume_run(
            run_dir, resolved_config_yaml=OmegaConf.to_yaml(resolved), checkpoint=resumed, overrides=overrides
        )
    else:
        run_folder.start_run(run_dir, resolved_config_yaml=OmegaConf.to_yaml(resolved), overrides=overrides)
    if skipped:
        (run_dir / "skipped_samples.json").write_text(json.dumps(skipped, indent=2, default=str) + "\n")
        log.warning("%d bad samples were skipped; see %s", len(skipped), run_dir / "skipped_samples.json")
        run_folder.update_run_json(run_dir, skipped_samples=len(skipped))
    if truncated is not None:
        run_folder.update_run_json(run_dir, truncated=dict(truncated))
    for logger in loggers:
        logger.log_hyperparams({**resolved, "overrides": overrides, "git": run_folder.run_git_state()})
        if isinstance(logger, WandbLogger):
            # A resumed run logs its next segment with this group and name (see mmfw.resume).
            resume.record_wandb_segment(run_dir, logger.experiment)


@rank_zero_only
def record_stop(run_dir: Path, error: BaseException, trainer: pl.Trainer | None) -> None:
    """Record why the run stopped in run.json: ``interrupted`` (SIGTERM, Ctrl-C) or ``failed`` with the error."""
    step = f" at global step {trainer.global_step}" if trainer is not None else ""
    if isinstance(error, SIGTERMException | KeyboardInterrupt | SystemExit):
        # Lightning turns Ctrl-C into SystemExit(1) after calling the callbacks' on_exception.
        message = f"stopped by {'SIGTERM' if isinstance(error, SIGTERMException) else 'an interrupt'}{step}"
        last = run_folder.last_checkpoint(run_dir)
        message += f"; continue with: mmfw-train resume={run_dir}" if last else "; no checkpoint was saved"
        run_folder.finish_run(run_dir, status="interrupted", error=message)
    else:
        # A run that failed before it started (a config error) gets a run.json all the same.
        first = {} if run_folder.read_run_json(run_dir) else {"overrides": sweep.task_overrides()}
        run_folder.finish_run(run_dir, status="failed", error=f"{type(error).__name__}: {error}", **first)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return sweep.run_job(train, cfg)


if __name__ == "__main__":
    main()
