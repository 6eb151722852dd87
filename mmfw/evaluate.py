"""``mmfw-eval run=<run folder>``: rebuild a run from its saved config, test its best checkpoint, print and save
the metrics (``<run>/eval_metrics.json``), including the modality-contribution rows (``test/acc[-audio]``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from mmfw import run_folder
from mmfw.train import CONFIG_DIR, build

log = logging.getLogger(__name__)


def load_run_config(run_dir: Path) -> DictConfig:
    """The run's composed config with its output folder pinned to ``run_dir`` (no Hydra runtime needed)."""
    cfg = OmegaConf.load(run_dir / run_folder.HYDRA_CONFIG)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def evaluate(run: str, *, ckpt: str = "best", accelerator: str = "auto", batch_size: int | None = None) -> dict:
    run_dir = run_folder.check_run_folder(run)
    cfg = load_run_config(run_dir)
    if batch_size is not None:
        cfg.datamodule.batch_size = batch_size
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg, stage="test")
    checkpoint = run_folder.best_checkpoint(run_dir) if ckpt == "best" else Path(ckpt)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=cfg.trainer.precision, logger=False, enable_checkpointing=False
    )
    results = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in sorted(results.items())}
    record = {"run": str(run_dir), "checkpoint": str(checkpoint), "metrics": metrics}
    (run_dir / "eval_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print_metrics(metrics, title=f"{run_dir} ({checkpoint.name})")
    return metrics


def print_metrics(metrics: dict[str, float], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg.run, ckpt=cfg.ckpt, accelerator=cfg.accelerator, batch_size=cfg.batch_size)


if __name__ == "__main__":
    main()
