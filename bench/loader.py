"""Data loading vs model consumption on the default experiment: how many batches a second the training loader
delivers (in-process and with worker processes) against how many training steps a second the model takes (forward,
backward, optimizer step on batches already in memory). A ratio above 1 means the loader is not what bounds
training. Repeats alternate between the measurements.

    OMP_NUM_THREADS=1 python bench/loader.py --workers 0 2 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import time

import pytorch_lightning as pl
import torch
from _common import compose_config, summary
from omegaconf import open_dict

from mmfw.contracts import TARGET_KEY
from mmfw.train import build


def loader_batches_per_s(loader: torch.utils.data.DataLoader, batches: int) -> float:
    start = time.perf_counter()
    for _ in itertools.islice(iter(loader), batches):
        pass
    return batches / (time.perf_counter() - start)


def model_steps_per_s(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict]) -> float:
    model.train()
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss_fn(model(batch), batch[TARGET_KEY])
        loss.backward()
        optimizer.step()
    return len(batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="datamodule.num_workers to try")
    parser.add_argument("--batches", type=int, default=60, help="batches per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. datamodule.batch_size=8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_config(args.overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.log_dir  # nothing is written there
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    optimizer = model.optimizer_factory(params=model.parameters())
    loaders = {}
    for workers in args.workers:
        datamodule.num_workers = workers
        loaders[workers] = datamodule.train_dataloader()
        next(iter(loaders[workers]))  # start persistent workers before timing
    batches = list(itertools.islice(iter(loaders[args.workers[0]]), args.batches))
    model_steps_per_s(model, optimizer, batches[:5])  # warm-up
    rates: dict[str, list[float]] = {"model": [], **{f"loader, {w} workers": [] for w in args.workers}}
    for _ in range(args.repeats):
        rates["model"].append(model_steps_per_s(model, optimizer, batches))
        for workers, loader in loaders.items():
            rates[f"loader, {workers} workers"].append(loader_batches_per_s(loader, args.batches))
    model_min, model_med = summary(rates["model"])
    print(f"batch size {cfg.datamodule.batch_size}, {args.batches} batches, {args.repeats} interleaved repeats")
    print("| what | batches/s min | batches/s median | loader / model (median) |")
    print("|---|---|---|---|")
    print(f"| model training steps | {model_min:.1f} | {model_med:.1f} | |")
    for name, values in rates.items():
        if name != "model":
            low, med = summary(values)
            print(f"| {name} | {low:.1f} | {med:.1f} | {med / model_med:.1f}x |")


if __name__ == "__main__":
    main()
