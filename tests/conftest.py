"""Test settings: offline W&B/HF, the shared read-only AV-digits copy, caches in a writable folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmfw.train import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
SHARED_AVDIGITS = REPO.parent / "shared" / "data" / "avdigits"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if SHARED_AVDIGITS.is_dir():
    os.environ.setdefault("MMFW_AVDIGITS_RAW", str(SHARED_AVDIGITS))
# Processed real data is shared between tests (and runs): built once, then read from here.
os.environ.setdefault("MMFW_CACHE_DIR", str(REPO / "data" / "cache"))
# pytest-xdist runs one worker per core; more intra-op threads per worker only oversubscribe the 2 cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def avdigits_raw() -> Path:
    """The real AV-digits raw folder; tests that need it are skipped with the reason when it is absent."""
    raw = Path(os.environ.get("MMFW_AVDIGITS_RAW", SHARED_AVDIGITS))
    if not (raw / "mnist" / "mnist.npz").is_file():
        pytest.skip(f"real AV-digits data not found at {raw}: set MMFW_AVDIGITS_RAW")
    return raw


# Small AV-digits construction for tests: real files, seconds to build once, then cached.
TINY_AVDIGITS = [
    "datamodule.train_size=40",
    "datamodule.val_size=20",
    "datamodule.test_size=20",
    "datamodule.batch_size=8",
]


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as mmfw-train would, with the run folder at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        del cfg.hydra
    return cfg
