"""What the bench scripts share: composing mmfw's config outside the CLI, timing epochs, summarising repeats."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmfw.train import CONFIG_DIR


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """conf/train.yaml composed as ``mmfw-train <overrides>`` would, the run folder at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir / "logs")
        del cfg.hydra
    return cfg


EPOCH_TIMES: list[float] = []
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = {"now": time.perf_counter}
"""The clock EpochTimer and the plain loops read: ``wall`` time, or this process's ``cpu`` time, steadier than wall
time on a machine whose cores other jobs share (with threads=1 and in-process data loading it is the work done)."""


def use_clock(name: str) -> None:
    CLOCK["now"] = CLOCKS[name]


class EpochTimer(pl.Callback):
    """Appends to EPOCH_TIMES the wall time of each training epoch plus its validation pass (epoch start to validation
    end), what a plain loop's epoch does too; checkpointing and logging at the epoch's end are left out of both.
    Configured as ``+callbacks.epoch_timer._target_=_common.EpochTimer`` (Hydra builds it)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = CLOCK["now"]()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and hasattr(self, "start"):
            EPOCH_TIMES.append(CLOCK["now"]() - self.start)


def summary(values: list[float]) -> tuple[float, float]:
    """(min, median) of repeated measurements."""
    return min(values), statistics.median(values)
