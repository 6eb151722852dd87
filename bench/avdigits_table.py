"""The whole AV-digits table at the default budget: every fusion in conf/fusion plus both unimodal experiments
(experiment=avdigits_audio_only, avdigits_image_only), each over several seeds, as parallel single-thread jobs.
Prints test accuracy mean ± std per row, each run's wall time and the part outside its training epochs (start-up,
data, test, teardown), and the total wall time.

    OMP_NUM_THREADS=1 python bench/avdigits_table.py --jobs 2                   # the full table (39 runs)
    OMP_NUM_THREADS=1 python bench/avdigits_table.py --fusions concat late --seeds 0 --no-unimodal   # a quick check

Jobs run in a pool of ``--jobs`` worker processes (each imports torch and Lightning once and then runs its jobs one
after another, like Hydra's joblib launcher), longest first. Runs go under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from _common import EPOCH_TIMES, compose_config
from omegaconf import open_dict

from mmfw.train import CONFIG_DIR


def run_job(row: str, overrides: list[str], run_dir: str) -> dict:
    """One run in this worker process: its test accuracy, wall time, and the time its epochs took."""
    from mmfw.train import train

    start = time.perf_counter()
    cfg = compose_config(overrides, Path(run_dir))
    with open_dict(cfg):
        cfg.callbacks.epoch_timer = {"_target_": "_common.EpochTimer"}
    EPOCH_TIMES.clear()
    train(cfg)
    wall = time.perf_counter() - start
    record = json.loads((Path(run_dir) / "run.json").read_text())
    return {
        "row": row,
        "overrides": overrides,
        "test_acc": record["test_metrics"]["test/acc"],
        "wall_s": wall,
        "epochs_s": sum(EPOCH_TIMES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fusions = sorted(p.stem for p in (Path(CONFIG_DIR) / "fusion").glob("*.yaml"))
    parser.add_argument("--fusions", nargs="+", default=fusions, help=f"default: all of conf/fusion ({len(fusions)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-unimodal", dest="unimodal", action="store_false", help="skip the unimodal rows")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--out", type=Path, default=Path("logs/bench/avdigits_table"))
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. trainer.max_epochs=2")
    args = parser.parse_args()
    rows = {fusion: [f"fusion={fusion}"] for fusion in args.fusions}
    if args.unimodal:
        rows |= {"audio only": ["experiment=avdigits_audio_only"], "image only": ["experiment=avdigits_image_only"]}
    jobs = [
        (row, [*row_overrides, f"seed={seed}", "threads=1", *args.overrides], str(args.out / f"{row}-{seed}"))
        for row, row_overrides in rows.items()
        for seed in args.seeds
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(run_job, *zip(*jobs, strict=True)))
    total = time.perf_counter() - start
    print(f"\n{len(jobs)} runs, {args.jobs} at once, one thread each; runs in {args.out}")
    print("| method | test acc % (mean ± std over seeds) | run wall s (mean) | outside epochs s (mean) |")
    print("|---|---|---|---|")
    by_row = {row: [r for r in results if r["row"] == row] for row in rows}
    for row, runs in sorted(by_row.items(), key=lambda item: -statistics.mean(r["test_acc"] for r in item[1])):
        accs = [100 * r["test_acc"] for r in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        walls = [r["wall_s"] for r in runs]
        fixed = [r["wall_s"] - r["epochs_s"] for r in runs]
        print(f"| {row} | {statistics.mean(accs):.1f} ± {std:.1f} | {statistics.mean(walls):.0f} "
              f"| {statistics.mean(fixed):.0f} |")  # fmt: skip
    busy = sum(r["wall_s"] for r in results)
    print(f"total wall time: {total / 60:.1f} min ({busy / 60:.1f} min of runs, {args.jobs} at once)")


if __name__ == "__main__":
    main()
