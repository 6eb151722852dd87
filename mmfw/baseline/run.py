"""Fitting, selecting, testing and recording a run's baselines; the ``mmfw-baseline`` entry point (see
:mod:`mmfw.baseline`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmfw.baseline.features import ALL, SPLITS, FeatureSettings, feature_sets, modality_kinds, split_arrays
from mmfw.baseline.models import fit_and_select
from mmfw.contracts import TaskSpec
from mmfw.runs import run_folder
from mmfw.runs.config import CONFIG_DIR, default_monitor

log = logging.getLogger(__name__)

BASELINE_DIR = "baseline"


def metric_name(model: str, metric: str) -> str:
    """``baseline/test/acc`` for the all-modalities model, ``baseline[text]/test/acc`` for one modality."""
    return f"baseline/{metric}" if model == ALL else f"baseline[{model}]/{metric}"


def run_baseline(
    run: str | Path,
    *,
    grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
    settings: FeatureSettings | None = None,
    datamodule: pl.LightningDataModule | None = None,
) -> dict[str, Any]:
    """Fit, select and test the baselines of a run folder; write and merge their metrics (see :mod:`mmfw.baseline`).

    ``datamodule``: the run's datamodule when the caller has it set up already (``mmfw-train baseline=true``);
    else it is rebuilt from the run folder's config.
    """
    from mmfw.evaluate import load_run_config  # evaluate imports much of mmfw; only needed here

    run_dir = run_folder.check_run_folder(run)
    cfg = load_run_config(run_dir)
    if datamodule is None:
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = hydra.utils.instantiate(cfg.datamodule)
        datamodule.prepare_data()
        datamodule.setup(None)
    task: TaskSpec = datamodule.task
    default_monitor(cfg, datamodule)  # monitor.metric=auto: the choice the run makes
    monitor, mode = str(cfg.monitor.metric), str(cfg.monitor.mode)
    modalities, kinds = list(datamodule.modalities), modality_kinds(datamodule)
    data = {s: split_arrays(datamodule, s, modalities) for s in SPLITS}
    targets = {s: data[s].target for s in SPLITS}
    sets, described = feature_sets(data, kinds, modalities, settings or FeatureSettings())
    models = {}
    for name, split_features in sets.items():
        log.info("baseline %s: fitting on %d train samples", name, split_features["train"].shape[0])
        models[name] = fit_and_select(task, split_features, targets, monitor=monitor, mode=mode, grid=grid)
        models[name]["modalities"] = modalities if name == ALL else [name]
    record = {
        "run": str(run_dir),
        "task": {"kind": task.kind, "num_outputs": task.num_outputs},
        "monitor": {"metric": monitor, "mode": mode},
        "split_sizes": {s: int(len(targets[s])) for s in SPLITS},
        "features": {m: {"kind": kinds[m], "description": described[m]} for m in modalities},
        "grid": [float(c) for c in grid],
        "models": models,
        "test_metrics": {metric_name(n, k): v for n, result in models.items() for k, v in result["test"].items()},
    }
    write_record(run_dir, record)
    print_comparison(run_dir, models)
    return record


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """``<run>/baseline/metrics.json``, the baseline's test metrics merged into the run's, and run.json's note."""
    out_dir = run_dir / BASELINE_DIR
    out_dir.mkdir(exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    merge_test_metrics(run_dir, record["test_metrics"])
    chosen = {name: result["C"] for name, result in record["models"].items()}
    run_folder.update_run_json(run_dir, baseline={"metrics_file": f"{BASELINE_DIR}/metrics.json", "C": chosen})


def merge_test_metrics(run_dir: Path, baseline_metrics: dict[str, float]) -> dict[str, float]:
    """Replace the ``baseline...`` entries of ``test_metrics.json`` and run.json's ``test_metrics``."""

    def merged(existing: dict[str, float]) -> dict[str, float]:
        kept = {k: v for k, v in existing.items() if not k.startswith("baseline")}
        return dict(sorted((kept | baseline_metrics).items()))

    path = run_dir / "test_metrics.json"
    from_file = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(merged(from_file), indent=2) + "\n")
    record = run_folder.read_run_json(run_dir)
    return run_folder.update_run_json(run_dir, test_metrics=merged(record.get("test_metrics") or {}))["test_metrics"]


def print_comparison(run_dir: Path, models: dict[str, dict[str, Any]]) -> None:
    """The model's own test metrics beside the baselines' (one row each, so it fits a terminal)."""
    model_metrics = run_folder.read_run_json(run_dir).get("test_metrics") or {}
    names = list(models)[-1:] + list(models)[:-1]  # "all" first
    keys = list(models[ALL]["test"])
    table = Table(title=f"{run_dir.name}: test split, the model vs linear baselines (all modalities; each alone)")
    table.add_column("run / baseline", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("C (val)", justify="right")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    table.add_row("model", *[cell(model_metrics.get(k)) for k in keys], "")
    for name in names:
        row = [escape(metric_name(name, "")[:-1]), *[cell(models[name]["test"][k]) for k in keys]]
        table.add_row(*row, f"{models[name]['C']:g}")
    Console().print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="baseline")
def main(cfg: DictConfig) -> None:
    grid = [float(c) for c in cfg.grid]
    settings = FeatureSettings(**OmegaConf.to_container(cfg.features, resolve=True))
    run_baseline(cfg.run, grid=grid, settings=settings)
