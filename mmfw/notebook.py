"""What the notebooks in ``notebooks/`` use, so that they define nothing themselves: run the console scripts as a
user would (a real run folder, ``.hydra/`` included), and read and draw what a run folder holds.

Everything here reads run folders by their files (``csv/metrics.csv``, ``test_metrics.json``, ``run.json``), not
by mmfw's run code, so it works on any run folder, old or new.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.figure import Figure
from omegaconf import DictConfig

from mmfw.train import CONFIG_DIR

# ---------------------------------------------------------------- the console scripts


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """``conf/train.yaml`` composed with Hydra's compose API, as ``mmfw-train`` would compose it (``hydra=True``
    keeps the ``hydra`` node: run and sweep folders)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def run_script(script: str, *args: str, tail: int = 15) -> str:
    """Run a console script (``mmfw-train``, ``mmfw-eval``, ``mmfw-compare`` ...) of this environment and print the
    last ``tail`` lines of its output; a failure raises with the whole output."""
    found = Path(sys.executable).parent / script
    executable = str(found) if found.is_file() else shutil.which(script)
    if executable is None:
        raise FileNotFoundError(f"{script} is not installed in this environment: pip install -e . in the mmfw checkout")
    result = subprocess.run([executable, *args], capture_output=True, text=True)
    text = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} exited with {result.returncode}:\n{text}")
    print("\n".join(text.rstrip().splitlines()[-tail:]))
    return text


def train(*overrides: str) -> Path:
    """``mmfw-train <overrides>``; returns its run folder (chosen here the way mmfw-train chooses it)."""
    run_dir = Path(compose_config(*overrides, hydra=True).hydra.run.dir)
    run_script("mmfw-train", *overrides, f"hydra.run.dir={run_dir}")
    return run_dir


def sweep(*overrides: str) -> Path:
    """``mmfw-train -m <overrides>``; returns the sweep folder (one job folder per run: :func:`sweep_runs`)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]  # compose takes one value per key
    sweep_dir = Path(compose_config(*fixed, hydra=True).hydra.sweep.dir)
    run_script("mmfw-train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


def sweep_runs(sweep_dir: str | Path) -> list[Path]:
    """The job folders of a sweep, in job order."""
    return sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


# ---------------------------------------------------------------- reading a run folder


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def read_curves(run_dir: str | Path) -> pd.DataFrame:
    """``<run>/csv/metrics.csv`` as one row per epoch: Lightning writes one row per logging call (train and val
    metrics of an epoch on separate rows, steps in between); the epoch's last value of each metric is kept."""
    metrics = pd.read_csv(Path(run_dir) / "csv" / "metrics.csv")
    epochs = metrics.dropna(subset=["epoch"]).groupby("epoch").last()
    return epochs.drop(columns=[c for c in epochs if c.endswith("_step")] + ["step"], errors="ignore")


def plot_curves(run_dir: str | Path, metrics: Sequence[str] = ("loss", "acc")) -> Figure:
    """Train and val curves per epoch of each of ``metrics`` (the ones the run logged), one panel each."""
    curves = read_curves(run_dir)
    shown = [m for m in metrics if any(f"{split}/{m}" in curves for split in ("train", "val"))]
    figure, axes = plt.subplots(1, max(len(shown), 1), figsize=(4.5 * max(len(shown), 1), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], shown, strict=False):
        for split in ("train", "val"):
            column = f"{split}/{metric}"
            if column in curves:
                values = curves[column].dropna()
                ax.plot(values.index + 1, values.to_numpy(), marker="o", label=split)
        ax.set(title=metric, xlabel="epoch")
        ax.legend()
    figure.tight_layout()
    return figure


def show_batch(batch: Mapping[str, torch.Tensor], modalities: Sequence[str], n: int = 6, labels=None) -> Figure:
    """The first ``n`` samples of a batch, one row per modality that is a picture (an image, a spectrogram:
    ``(C, H, W)`` per sample, first channel drawn); a masked-out modality is left blank. ``labels`` names the
    targets (the task's class names)."""
    pictures = [m for m in modalities if batch[m].dim() == 4]
    n = min(n, len(batch["target"]))
    figure, axes = plt.subplots(len(pictures), n, figsize=(1.6 * n, 1.7 * len(pictures)), squeeze=False)
    for row, modality in enumerate(pictures):
        column = list(modalities).index(modality)
        for i in range(n):
            ax = axes[row][i]
            ax.set_xticks([])
            ax.set_yticks([])
            if bool(batch["mask"][i, column]):
                picture = batch[modality][i, 0].float().cpu().numpy()
                ax.imshow(picture, cmap="gray" if picture.shape[0] == picture.shape[1] else "magma", origin="upper")
            if i == 0:
                ax.set_ylabel(modality)
            if row == 0:
                target = int(batch["target"][i])
                ax.set_title(labels[target] if labels else str(target))
    figure.tight_layout()
    return figure


def modality_contribution(run_dirs: Sequence[str | Path], metric: str = "test/acc") -> pd.DataFrame:
    """Per run: ``metric`` with every modality and with each one masked out (``test/acc[-audio]``, logged at the
    end of training), and the drop each modality's absence causes."""
    rows = []
    for run_dir in run_dirs:
        tested = read_json(Path(run_dir) / "test_metrics.json")
        row = {"run": Path(run_dir).name, metric: tested.get(metric, math.nan)}
        for key, value in tested.items():
            if key.startswith(f"{metric}[-") and key.endswith("]"):
                modality = key[len(metric) + 2 : -1]
                row[f"without {modality}"] = value
                row[f"drop without {modality}"] = row[metric] - value
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")
