"""Test settings: offline W&B/HF, the shared read-only AV-digits copy, caches in a writable folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def avdigits_raw() -> Path:
    """The real AV-digits raw folder; tests that need it are skipped with the reason when it is absent."""
    raw = Path(os.environ.get("MMFW_AVDIGITS_RAW", SHARED_AVDIGITS))
    if not (raw / "mnist" / "mnist.npz").is_file():
        pytest.skip(f"real AV-digits data not found at {raw}: set MMFW_AVDIGITS_RAW")
    return raw
