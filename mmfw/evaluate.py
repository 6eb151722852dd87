"""``mmfw-eval run=<run folder>``: rebuild a run from its saved config, test its best checkpoint, print and save
the metrics (``<run>/eval_metrics.json``), including the modality-contribution rows (``test/acc[-audio]``).

``mmfw-eval run=<run folder> robustness=default`` also sweeps per-modality corruptions and missing-modality subsets
(:mod:`mmfw.robustness`) and writes ``<run>/robustness/robustness.{json,png}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from mmfw.robustness import RobustnessConfigError, evaluate_robustness, plan_corruptions, print_report, save_report
from mmfw.robustness.sweep import modality_kinds
from mmfw.runs import run_folder
from mmfw.runs.loggers import log_eval_to_wandb
from mmfw.threads import apply_thread_policy
from mmfw.train import CONFIG_DIR, build

log = logging.getLogger(__name__)

TRAINED_NODES = ("datamodule", "paths", "monitor")
"""Config nodes taken as the run resolved them when it trained (see :func:`load_run_config`)."""


def load_run_config(run_dir: Path) -> DictConfig:
    """The run's composed config with its output folder pinned to ``run_dir`` (no Hydra runtime needed).

    ``datamodule`` and ``paths`` (data and cache folders) are the ones the run resolved when it trained
    (resolved_config.yaml): the composed config's ``${oc.env:...}`` defaults (``MMFW_AVDIGITS_RAW``) and relative
    paths would otherwise resolve against wherever and with whatever environment mmfw-eval or mmfw-baseline is
    started, and rebuild other data or write a new cache there. ``monitor`` is the one the run used too
    (``monitor.metric=auto`` is chosen from the data when the run is built). A run folder from before
    resolved_config.yaml existed keeps its composed nodes.
    """
    cfg = OmegaConf.load(run_dir / run_folder.HYDRA_CONFIG)
    resolved = run_dir / run_folder.RESOLVED_CONFIG
    trained = OmegaConf.load(resolved) if resolved.is_file() else OmegaConf.create()
    with open_dict(cfg):
        for node in TRAINED_NODES:
            if trained.get(node) is not None:
                cfg[node] = trained[node]
        cfg.paths.output_dir = str(run_dir)
    return cfg


def evaluate(
    run: str,
    *,
    ckpt: str = "best",
    accelerator: str = "auto",
    batch_size: int | None = None,
    robustness: Mapping[str, Any] | None = None,
) -> dict:
    """Test the run's checkpoint; with ``robustness`` (keyword arguments of
    :func:`mmfw.robustness.evaluate_robustness` without model/datamodule/device) also run the robustness sweep."""
    run_dir = run_folder.check_run_folder(run)
    cfg = load_run_config(run_dir)
    if batch_size is not None:
        cfg.datamodule.batch_size = batch_size
    checkpoint, note = run_folder.best_checkpoint(run_dir) if ckpt == "best" else (Path(ckpt), None)
    if note:
        log.warning(note)
    state = run_folder.load_checkpoint(checkpoint)  # before any data is built: a refused file fails fast
    apply_thread_policy(cfg.get("threads", "auto"), {"accelerator": accelerator, "devices": 1})
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg, stage="test")
    if robustness is not None:  # a bad robustness setting fails before anything is evaluated
        plan_corruptions(robustness.get("corruptions") or {}, modality_kinds(datamodule))
    model.load_state_dict(state["state_dict"])
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=cfg.trainer.precision, logger=False, enable_checkpointing=False
    )
    results = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in sorted(results.items())}
    record = {"run": str(run_dir), "checkpoint": str(checkpoint), **({"checkpoint_note": note} if note else {})}
    record["metrics"] = metrics
    record["wandb_run_id"] = log_eval_to_wandb(run_dir, metrics, checkpoint=checkpoint)
    (run_dir / "eval_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print_metrics(metrics, title=f"{run_dir} ({checkpoint.name})")
    if robustness is not None:
        options = dict(robustness)
        # The curves follow the metric the run was selected on (val/acc -> acc), unless told otherwise.
        monitored = str(cfg.monitor.metric).split("/")[-1]
        options["metric"] = options.get("metric") or (None if monitored == "loss" else monitored)
        if options.get("split", "test") == "val":
            datamodule.setup("validate")
        device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
        report = {"run": str(run_dir), "checkpoint": str(checkpoint)}
        report |= evaluate_robustness(model, datamodule, device=device, **options)
        json_path, png_path = save_report(report, run_dir / "robustness")
        print_report(report, title=run_dir.name)
        log.info("robustness report: %s, %s", json_path, png_path)
    return metrics


def print_metrics(metrics: dict[str, float], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)


def robustness_options(node: DictConfig | None) -> dict[str, Any] | None:
    """The ``robustness`` config group as keyword arguments, its corruptions instantiated (None: no sweep)."""
    if node is None:
        return None
    corruptions = {}
    for key, spec in (node.get("corruptions") or {}).items():
        try:
            corruptions[str(key)] = None if spec is None else hydra.utils.instantiate(spec)
        except Exception as err:
            raise RobustnessConfigError(f"robustness.corruptions.{key}: {err}") from err
    options = OmegaConf.to_container(node, resolve=True)
    options["corruptions"] = corruptions
    return options


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    robustness = robustness_options(cfg.get("robustness"))
    evaluate(cfg.run, ckpt=cfg.ckpt, accelerator=cfg.accelerator, batch_size=cfg.batch_size, robustness=robustness)


if __name__ == "__main__":
    main()
