"""Per-step overhead: mmfw's training (the default experiment, default callbacks and loggers) vs a hand-written
PyTorch loop on the same model (built from the same config and seed), the same data loaders, the same optimizer and
scheduler, validating each epoch. Repeats alternate between the two (interleaved), so both see the same machine.

    OMP_NUM_THREADS=1 python bench/step_overhead.py --batch-sizes 8 64 --repeats 3
    OMP_NUM_THREADS=1 python bench/step_overhead.py --train-size 10000 --val-size 2000   # the default budget

An epoch's time is its training batches plus its validation pass (for mmfw: Lightning's epoch start to validation
end); the first epoch of each run is left out (warm-up). Printed per batch size: ms per training step of each,
min and median over all measured epochs, and the ratio mmfw / plain (1.00 = no overhead). ``--clock cpu`` (default)
times this process's CPU time, steadier than wall time when other jobs share the cores (with threads=1 and data
loaded in-process it is the work done). ``--variant NAME OVERRIDE...`` adds mmfw with those overrides as one more
interleaved arm, e.g. the code before a change, in the same run:

    python bench/step_overhead.py --variant lightning-bar \
        callbacks.rich_progress_bar._target_=pytorch_lightning.callbacks.RichProgressBar
"""

from __future__ import annotations

import argparse
import atexit
import math
import shutil
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from _common import CLOCK, EPOCH_TIMES, compose_config, summary, use_clock
from omegaconf import open_dict

from mmfw.contracts import TARGET_KEY
from mmfw.train import build, train


def mmfw_epochs(overrides: list[str], root: Path) -> list[float]:
    """Epoch times of one ``mmfw-train <overrides>`` run, in this process."""
    cfg = compose_config(overrides, root / f"mmfw-{time.monotonic_ns()}")
    with open_dict(cfg):
        cfg.callbacks.epoch_timer = {"_target_": "_common.EpochTimer"}
    EPOCH_TIMES.clear()
    train(cfg)
    return list(EPOCH_TIMES)


def plain_epochs(overrides: list[str], root: Path, epochs: int) -> list[float]:
    """Epoch times of a plain loop: zero_grad, forward, loss, backward, step; scheduler per epoch; validation
    accuracy and loss accumulated on the device, read once per epoch."""
    cfg = compose_config(overrides, root / f"plain-{time.monotonic_ns()}")
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    optimizer = model.optimizer_factory(params=model.parameters())
    scheduler = model.scheduler_factory(optimizer=optimizer) if model.scheduler_factory is not None else None
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    times = []
    for _ in range(epochs):
        start = CLOCK["now"]()
        model.train()
        train_loss = torch.zeros(())
        for batch in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss_fn(model(batch), batch[TARGET_KEY])
            loss.backward()
            optimizer.step()
            train_loss += loss.detach()
        if scheduler is not None:
            scheduler.step()
        model.eval()
        correct = val_loss = torch.zeros(())
        with torch.no_grad():
            for batch in val_loader:
                logits = model(batch)
                val_loss = val_loss + model.loss_fn(logits, batch[TARGET_KEY])
                correct = correct + (logits.argmax(dim=1) == batch[TARGET_KEY]).sum()
        float(train_loss), float(val_loss), int(correct)  # what a plain loop prints once an epoch
        times.append(CLOCK["now"]() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--train-size", type=int, default=2000, help="datamodule.train_size (default budget: 10000)")
    parser.add_argument("--val-size", type=int, default=500, help="datamodule.val_size (default budget: 2000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is warm-up, not measured")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both")
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: this process's CPU time (steadier on shared cores)",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME OVERRIDE",
        help="one more mmfw arm: its name, then its extra overrides (repeatable)",
    )
    parser.add_argument("overrides", nargs="*", help="extra config overrides for all, e.g. fusion=late")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    use_clock(args.clock)
    root = Path(tempfile.mkdtemp(prefix="mmfw-bench-step-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # its run folders (~20 MB a run)
    rows = []
    for batch_size in args.batch_sizes:
        overrides = [
            f"datamodule.train_size={args.train_size}",
            f"datamodule.val_size={args.val_size}",
            "datamodule.test_size=100",
            f"datamodule.batch_size={batch_size}",
            f"trainer.max_epochs={args.epochs}",
            f"threads={args.threads}",
            "test=false",
            "callbacks.early_stopping=null",  # both run every epoch
            *args.overrides,
        ]
        steps = math.ceil(args.train_size / batch_size)
        arms = {"mmfw": overrides, "plain": overrides} | {
            f"mmfw [{name}]": [*overrides, *extra] for name, *extra in args.variant
        }
        timed = {name: [] for name in arms}
        for repeat in range(args.repeats):
            order = list(arms)
            order = order[repeat % len(order) :] + order[: repeat % len(order)]  # each arm first in turn
            for name in order:
                if name == "plain":
                    epochs = plain_epochs(arms[name], root, args.epochs)
                else:
                    epochs = mmfw_epochs(arms[name], root)
                timed[name] += [1000 * t / steps for t in epochs[1:]]
                print(f"batch {batch_size} repeat {repeat} {name}: ms/step {[round(t, 2) for t in timed[name][-2:]]}")
        plain_min, plain_med = summary(timed["plain"])
        for name in arms:
            if name != "plain":
                rows.append((batch_size, name, steps, plain_min, plain_med, *summary(timed[name])))
    print(f"\n{args.train_size} train / {args.val_size} val pairs, {args.repeats} interleaved repeats")
    print(
        f"of {args.epochs - 1} measured epochs each; {args.clock} ms per training step (epoch incl. validation / steps)"
    )
    print(
        "| batch | arm | steps/epoch | plain min | plain median | arm min | arm median | ratio (min) | ratio (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for batch_size, name, steps, plain_min, plain_med, arm_min, arm_med in rows:
        print(
            f"| {batch_size} | {name} | {steps} | {plain_min:.2f} | {plain_med:.2f} | {arm_min:.2f} | {arm_med:.2f} "
            f"| {arm_min / plain_min:.3f} | {arm_med / plain_med:.3f} |"
        )


if __name__ == "__main__":
    main()
