"""Loggers as dashboards: W&B that never prompts, TensorBoard's HParams tab and MLflow filled per run.

W&B runs online with an API key, offline (files in the run folder, ``wandb sync`` later) without. Every logger gets
the run's *dashboard keys* (:func:`dashboard_hparams`: Hydra's choices ``choice/<group>``, parameter counts, the
modalities as one string, the seed and the values the command line set) with the config when the run starts, and
its *summary* (:func:`log_summary`: the best monitored value ``<monitor>_best``, the test metrics with the modality
ablations, the linear baseline's) when it ends, so runs of a sweep sort and group side by side on any of them.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def wandb_credentials_available() -> bool:
    """True when an API key is in the environment or in ~/.netrc (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def wandb_logger(
    *,
    project: str,
    save_dir: str,
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    log_model: bool = False,
    job_type: str = "train",
    resumed_from: str | None = None,
    segment: int = 0,
) -> WandbLogger:
    """A ``WandbLogger`` writing under ``save_dir``.

    A training run resumed from its folder logs to a new W&B run (a new id, the same group and name) rather than
    continuing the old id: wandb cannot resume an offline run (``wandb sync`` of a second offline run with the same
    id overwrites the first), and a resumed run trains again the part of an epoch after its checkpoint, whose steps
    one W&B history could only log twice. The segments line up on the ``trainer/global_step`` axis.

    Args:
        offline: ``None`` decides by itself: offline when ``WANDB_MODE`` is ``offline``/``disabled`` or when no
            API key is configured, so a run never stops at a login prompt.
        job_type: W&B's job type (``train`` for mmfw-train), to filter training runs from other jobs of a group.
        resumed_from: the W&B run id of the previous segment of this training run; written to the W&B config
            (``resumed_from``, ``segment``) so the dashboard can join the segments.
        segment: how many segments came before this one (0 for a run that was not resumed).
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or not wandb_credentials_available()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # wandb reads these instead of asking on the terminal.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    extra = {"config": {"resumed_from": resumed_from, "segment": segment}} if resumed_from else {}
    return WandbLogger(
        project=project,
        entity=entity,
        save_dir=save_dir,
        group=group,
        name=name,
        tags=list(tags) if tags else None,
        offline=offline,
        log_model=log_model,
        job_type=job_type,
        **extra,
    )


def log_eval_to_wandb(run_dir: Path, metrics: Mapping[str, float], *, checkpoint: Path) -> str | None:
    """``mmfw-eval`` of a run that logged to W&B: one W&B run of job type ``eval`` with the training run's project,
    group, name and tags (so the dashboard shows it beside the run it evaluated), the run's resolved config plus
    ``evaluated_run``/``checkpoint``, and the metrics as its summary. Written into the run folder, offline when
    training was (no API key, ``WANDB_MODE=offline``). Returns the W&B run id, or None for a run without W&B."""
    resolved = OmegaConf.load(run_dir / "resolved_config.yaml")
    node = OmegaConf.select(resolved, "logger.wandb")
    if node is None:
        return None
    settings = {k: node.get(k) for k in ("project", "entity", "group", "name", "tags", "offline")}
    logger = wandb_logger(**settings, save_dir=str(run_dir), job_type="eval")
    config = OmegaConf.to_container(resolved, resolve=True)
    logger.log_hyperparams({**config, "evaluated_run": str(run_dir), "checkpoint": str(checkpoint)})
    logger.experiment.summary.update(dict(metrics))
    run_id = logger.experiment.id
    finish_wandb([logger], failed=False)
    return run_id


@rank_zero_only
def finish_wandb(loggers: list, *, failed: bool) -> None:
    """End this process's W&B run (marked failed or finished).

    Lightning leaves the run open, and the next ``WandbLogger`` in the same process would log into it: the jobs of
    a multirun run one after another in one process, and each must be its own W&B run.
    """
    for logger in loggers:
        run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
        if run is not None:
            try:
                run.finish(exit_code=1 if failed else 0)
            except Exception as error:  # a logging problem must not hide how the run itself ended
                log.warning("Could not finish the W&B run %s: %s", run.id, error)


# ---------------------------------------------------------------- dashboard keys and summary

CHOICE_PREFIX = "choice/"
PARAMS_TOTAL, PARAMS_TRAINABLE = "model/params/total", "model/params/trainable"


def hydra_choices(run_dir: str | Path, modalities: list[str]) -> dict[str, str]:
    """Hydra's config-group choices of the run as flat keys: ``choice/fusion=concat``, ``choice/experiment=null``.

    Read from ``<run>/.hydra/hydra.yaml`` when it is there (a resumed run keeps the choices it started with: the
    resuming command's own choices are the defaults), else from the running Hydra; Hydra's own groups are left
    out, and so are the encoder choices of modalities the run does not use.
    """
    saved = Path(run_dir) / ".hydra" / "hydra.yaml"
    if saved.is_file():
        choices = OmegaConf.select(OmegaConf.load(saved), "hydra.runtime.choices", default=None) or {}
    elif HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    else:
        choices = {}
    kept = {}
    for group, choice in sorted(dict(choices).items()):
        if group == "hydra" or group.startswith("hydra/"):
            continue
        if group.startswith("encoder/") and group.split("/", 1)[1] not in modalities:
            continue
        kept[f"{CHOICE_PREFIX}{group}"] = "null" if choice is None else str(choice)
    return kept


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """``model/params/{total,trainable}`` (a frozen encoder counts in the total only)."""
    params = list(model.parameters())
    return {
        PARAMS_TOTAL: sum(p.numel() for p in params),
        PARAMS_TRAINABLE: sum(p.numel() for p in params if p.requires_grad),
    }


def overridden_values(cfg: DictConfig, overrides: list[str], *, groups: set[str]) -> dict[str, Any]:
    """The plain values the command line set (``model.optimizer.lr=0.01`` -> ``{"model.optimizer.lr": 0.01}``),
    resolved. Config-group overrides (``groups``: ``fusion=late``) are in the choices; Hydra's keys are left out."""
    values = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.package is not None or override.is_delete() or key in groups or "/" in key:
            continue
        if key.startswith("hydra."):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig | ListConfig):
            value = json.dumps(OmegaConf.to_container(value, resolve=True))
        values[key] = value
    return values


def dashboard_hparams(
    cfg: DictConfig, model: torch.nn.Module, *, run_dir: str | Path, overrides: list[str]
) -> dict[str, Any]:
    """The keys a dashboard compares runs on, flat and scalar: choices, parameter counts, ``modalities`` as one
    string (``image,audio``: a list cannot be grouped by), ``seed`` and the other values the command line set."""
    modalities = [str(m) for m in cfg.modalities]
    choices = hydra_choices(run_dir, modalities)
    groups = {key.removeprefix(CHOICE_PREFIX) for key in choices}
    own = {**parameter_counts(model), "modalities": ",".join(modalities), "seed": cfg.seed}
    values = overridden_values(cfg, overrides, groups=groups)
    return {**choices, **own, **{k: v for k, v in values.items() if k not in own}}


def log_config(loggers: list[Logger], config: Mapping[str, Any], dashboard: Mapping[str, Any]) -> None:
    """Hand the run's resolved config and its dashboard keys to every logger, once (MLflow refuses to change a
    parameter that was logged before). The dashboard keys win over the config's (``modalities`` as a string)."""
    for logger in loggers:
        logger.log_hyperparams({**config, **dashboard})


def log_summary(
    loggers: list[Logger], summary: Mapping[str, float], *, dashboard: Mapping[str, Any], step: int
) -> None:
    """The run's final numbers, per logger the way its dashboard shows them side by side.

    W&B: the run summary (otherwise the *last* value of each metric). TensorBoard: the HParams tab, which Lightning
    fills only when hyperparameters come with metrics: the dashboard keys as hparams, the summary as its metrics
    (their scalars are logged at ``step``). MLflow: the summary as metrics at ``step`` (the table shows the latest).
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(dict(summary))
        elif isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(dict(dashboard), metrics=dict(summary), step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.log_metrics(dict(summary), step=step)


def run_summary(*, monitor: str, best: float | None, test_metrics: Mapping[str, float]) -> dict[str, float]:
    """``<monitor>_best`` (``val/acc_best``) and the test metrics: model, modality ablations, baseline."""
    summary = {f"{monitor}_best": best} if best is not None else {}
    return {**summary, **{k: float(v) for k, v in test_metrics.items()}}


# ---------------------------------------------------------------- MLflow

_MLFLOW_BAD = re.compile(r"[^a-zA-Z0-9_/. -]")


def mlflow_metric_name(name: str) -> str:
    """The name a metric has in MLflow, which allows only letters, digits and ``_ / . - space``.

    ``[`` becomes ``.`` and ``]`` is dropped (``test/acc[-image]`` -> ``test/acc.-image``,
    ``baseline[text]/test/acc`` -> ``baseline.text/test/acc``); any other character becomes ``_``. Lightning's own
    MLflow logger would drop them instead (``test/acc-image``, ``baselinetext/test/acc``).
    """
    return _MLFLOW_BAD.sub("_", name.replace("[", ".").replace("]", ""))


class MlflowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` with mmfw's metric names mapped by :func:`mlflow_metric_name`."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({mlflow_metric_name(k): v for k, v in metrics.items()}, step=step)


def mlflow_logger(
    *,
    tracking_uri: str,
    experiment_name: str,
    run_name: str | None = None,
    tags: list[str] | None = None,
    artifact_location: str | None = None,
) -> MlflowLogger:
    """An :class:`MlflowLogger`; ``tags`` (the run's ``tags`` list) become MLflow tags ``<tag>=true``.

    A ``sqlite:///<file>`` store's folder is created first (MLflow creates the file, not its folder).
    """
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowLogger(
        tracking_uri=tracking_uri,
        experiment_name=experiment_name,
        run_name=run_name,
        tags={str(tag): "true" for tag in tags or []},
        artifact_location=artifact_location,
    )
