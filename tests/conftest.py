"""Test settings: offline W&B/HF, the shared read-only AV-digits copy, caches in a writable folder."""

from __future__ import annotations

import fcntl
import os
import urllib.error
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmfw.data import download
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


# `.ci/run` sets it: a test that needs the real data then fails instead of skipping when the data is unavailable.
REQUIRE_DATA_ENV = "MMFW_REQUIRE_DATA"
# Where a fresh clone's tests download the raw data to (mmfw-train's default raw_dir when started from the repo).
FETCHED_AVDIGITS = REPO / "data" / "avdigits" / "raw"


def _has_raw_data(raw: Path) -> bool:
    recordings, mnist = download.fsdd_paths(raw)
    return mnist.is_file() and recordings.is_dir() and any(recordings.glob("*.wav"))


def provide_avdigits_raw(*, fetch_dir: Path, cache_dir: Path) -> Path:
    """The real AV-digits raw folder: ``$MMFW_AVDIGITS_RAW`` (or the shared copy) if it holds the data, else a copy
    downloaded into ``fetch_dir`` and checked against the reference digests.

    ``$MMFW_AVDIGITS_RAW`` is then pointed at the folder, so runs the tests start find it too. Only when the download
    cannot connect is the test skipped, with the reason; with ``MMFW_REQUIRE_DATA=1`` it fails instead. A download
    that does not match the reference digests always fails.
    """
    configured = Path(os.environ.get(download.ENV_VAR, SHARED_AVDIGITS))
    for raw in (configured, fetch_dir):
        if _has_raw_data(raw):
            os.environ[download.ENV_VAR] = str(raw)
            return raw
    fetch_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        # One download at a time: pytest-xdist workers each start this session fixture.
        with open(fetch_dir.parent / f".{fetch_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = download.ensure_raw_data(fetch_dir, cache_dir, download=True)
    except download.DataUnavailableError as err:
        unavailable = err
    else:
        unavailable = None
    if unavailable is not None:  # reported outside the except block: the message once, without the chained errors
        cause = unavailable.__cause__
        offline = isinstance(cause, OSError) and not isinstance(cause, urllib.error.HTTPError)
        how = (
            f"real AV-digits data not found at {configured} and it could not be downloaded into {fetch_dir}:\n"
            f"{unavailable}\nProvide it with MMFW_AVDIGITS_RAW=<folder with fsdd/recordings/*.wav and "
            f"mnist/mnist.npz>, or run the tests with network access (mirrors: {download.FSDD_URL_ENV}, "
            f"{download.MNIST_URL_ENV})."
        )
        required = os.environ.get(REQUIRE_DATA_ENV) == "1"
        if offline and not required:
            pytest.skip(f"{how} (set {REQUIRE_DATA_ENV}=1 to make this a failure)")
        pytest.fail(f"{how}{f' ({REQUIRE_DATA_ENV}=1: the data is required)' if required else ''}", pytrace=False)
    if not info.matches_reference:
        pytest.fail(f"the AV-digits data downloaded into {fetch_dir} differs from the reference copy", pytrace=False)
    os.environ[download.ENV_VAR] = str(fetch_dir)
    return fetch_dir


@pytest.fixture(scope="session")
def avdigits_raw() -> Path:
    """The real AV-digits raw folder, downloaded on a fresh clone (see :func:`provide_avdigits_raw`)."""
    return provide_avdigits_raw(fetch_dir=FETCHED_AVDIGITS, cache_dir=Path(os.environ["MMFW_CACHE_DIR"]) / "avdigits")


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
