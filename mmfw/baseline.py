"""``mmfw-baseline run=<run folder>``: the linear model a run has to beat, on exactly the run's splits.

The run's datamodule is rebuilt from the run folder's saved config (the same rows, the same train/val/test split,
the same train-fitted tabular statistics) and a scikit-learn linear model is fitted on the train split, per
modality and on all modalities together. Features per modality kind:

    text     TF-IDF of word 1-2-grams + character 2-5-grams of the raw text (from the manifest; a datamodule that
             cannot give raw text falls back to a bag of its token ids and 1-2-grams of them)
    tabular  the standardised numeric columns, their missing flags, one-hot categorical columns
    image    pixels average-pooled to at most ``image_side`` x ``image_side`` per channel, standardised
    audio    mean and standard deviation over time of each log-mel band, standardised

Each modality's features are scaled to a mean squared row norm of 1 on train, so that no block dominates the shared
penalty. A sample whose modality is missing (mask bit False) gets zeros there; the all-modalities model also sees the
mask bits. Models: logistic regression (multiclass: multinomial; binary), one-vs-rest logistic regression
(multilabel), ridge (regression). The regularisation ``C`` (ridge: ``alpha = 1 / C``) is chosen on the val split
by the run's ``monitor.metric``; test metrics are computed with the model's own torchmetrics
(:meth:`mmfw.contracts.TaskSpec.metrics`).

Writes ``<run>/baseline/metrics.json`` and merges ``baseline/test/<metric>`` (all modalities) and
``baseline[<modality>]/test/<metric>`` into ``<run>/test_metrics.json`` and ``run.json`` ``test_metrics`` (so
``mmfw-compare --metric baseline/test/acc`` compares them across runs).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from torch.utils.data import DataLoader

from mmfw.contracts import MASK_KEY, TARGET_KEY, TaskSpec
from mmfw.runs import run_folder
from mmfw.runs.config import CONFIG_DIR, default_monitor

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
BASELINE_DIR = "baseline"
ALL = "all"


def metric_name(model: str, metric: str) -> str:
    """``baseline/test/acc`` for the all-modalities model, ``baseline[text]/test/acc`` for one modality."""
    return f"baseline/{metric}" if model == ALL else f"baseline[{model}]/{metric}"


# ---------------------------------------------------------------------------------------------- the data
@dataclass
class SplitArrays:
    """One split as arrays: per modality its batch-contract tensor(s), the mask ``(N, M)`` and the target."""

    inputs: dict[str, Any]
    mask: np.ndarray
    target: np.ndarray
    texts: dict[str, list[str] | None]


def split_arrays(datamodule: pl.LightningDataModule, split: str, modalities: Sequence[str]) -> SplitArrays:
    """Every sample of ``split`` in dataset order (an unshuffled pass over the split's dataset)."""
    dataset = getattr(datamodule, f"{split}_dataloader")().dataset
    parts: dict[str, list[Any]] = {}
    for batch in DataLoader(dataset, batch_size=512, shuffle=False):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)

    def cat(chunks: list[Any]) -> Any:
        if isinstance(chunks[0], dict):
            return {k: torch.cat([c[k] for c in chunks]).numpy() for k in chunks[0]}
        return torch.cat(chunks).numpy()

    inputs = {m: cat(parts[m]) for m in modalities}
    mask = cat(parts[MASK_KEY]).astype(bool)
    kinds = modality_kinds(datamodule)
    texts = {m: raw_texts(datamodule, split, m, mask[:, i]) for i, m in enumerate(modalities) if kinds[m] == "text"}
    return SplitArrays(inputs=inputs, mask=mask, target=cat(parts[TARGET_KEY]), texts=texts)


def modality_kinds(datamodule: pl.LightningDataModule) -> dict[str, str]:
    """``{modality: kind}``: the baseline chooses features by kind (:mod:`mmfw.data.base`)."""
    return dict(datamodule.modality_kinds)


def raw_texts(datamodule: pl.LightningDataModule, split: str, modality: str, present: np.ndarray) -> list[str] | None:
    """The raw strings of a text modality in dataset order ("" where missing), or None when the datamodule keeps
    only token ids (``datamodule.raw_texts``)."""
    values = datamodule.raw_texts(split, modality)
    if values is None:
        return None
    if len(values) != len(present):
        raise RuntimeError(f"{split} split: {len(values)} raw texts of {modality!r} for {len(present)} samples")
    return [str(v) if p and v is not None else "" for v, p in zip(values, present, strict=True)]


# ---------------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class FeatureSettings:
    """How each modality kind is turned into features (see the module docstring)."""

    image_side: int = 16
    text_max_features: int = 200_000
    text_min_df: int = 2


def modality_features(
    kind: str, data: dict[str, SplitArrays], modality: str, column: int, settings: FeatureSettings
) -> tuple[dict[str, sp.csr_matrix], str]:
    """Features of one modality for every split (fitted on train only) and a short description of them."""
    present = {s: data[s].mask[:, column] for s in SPLITS}
    if kind == "text":
        texts = {s: data[s].texts.get(modality) for s in SPLITS}
        if texts["train"] is not None:
            min_df = settings.text_min_df if len(texts["train"]) >= 200 else 1
            common = dict(sublinear_tf=True, min_df=min_df, max_features=settings.text_max_features, dtype=np.float32)
            vectorizer = FeatureUnion([
                ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **common)),
                ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common)),
            ])  # fmt: skip
            described = "tf-idf word 1-2 + char 2-5 grams of the raw text"
        else:  # token ids only: a bag of ids and id bigrams, padding dropped
            texts = {s: [" ".join(f"t{i}" for i in row if i > 0) for row in data[s].inputs[modality]] for s in SPLITS}
            vectorizer = TfidfVectorizer(analyzer="word", token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True)
            described = "tf-idf of token ids and id bigrams (the datamodule keeps no raw text)"
        train = vectorizer.fit_transform(texts["train"])
        out = {"train": train, **{s: vectorizer.transform(texts[s]) for s in ("val", "test")}}
        return {s: sp.csr_matrix(x, dtype=np.float32) for s, x in out.items()}, described
    if kind == "tabular":
        dense, categorical = {}, {}
        for s in SPLITS:
            cols = data[s].inputs[modality]
            numeric = cols.get("numeric", np.zeros((len(present[s]), 0)))
            missing = cols.get("numeric_missing", np.zeros_like(numeric, dtype=bool))
            dense[s] = np.concatenate([numeric, missing.astype(np.float32)], axis=1)
            categorical[s] = cols.get("categorical", np.zeros((len(present[s]), 0), dtype=np.int64))
        out = {s: [sp.csr_matrix(dense[s], dtype=np.float32)] for s in SPLITS}
        if categorical["train"].shape[1]:
            encoder = OneHotEncoder(handle_unknown="ignore").fit(categorical["train"])
            for s in SPLITS:
                out[s].append(encoder.transform(categorical[s]))
        features = {s: _zero_missing(sp.hstack(out[s], format="csr", dtype=np.float32), present[s]) for s in SPLITS}
        return features, "standardised numeric + missing flags + one-hot categorical"
    if kind == "image":
        pooled = {s: _pool_image(data[s].inputs[modality], settings.image_side) for s in SPLITS}
        side = "x".join(str(n) for n in pooled["train"].shape[2:])
        flat = {s: x.reshape(len(x), -1) for s, x in pooled.items()}
        described = f"pixels average-pooled to {side} per channel, standardised"
    elif kind == "audio":
        flat = {}
        for s in SPLITS:
            mel = data[s].inputs[modality].reshape(len(present[s]), -1, data[s].inputs[modality].shape[-1])
            flat[s] = np.concatenate([mel.mean(axis=-1), mel.std(axis=-1)], axis=1)
        described = "mean and std over time of each log-mel band, standardised"
    else:
        raise ValueError(f"the baseline has no features for modality kind {kind!r} (modality {modality!r})")
    scaler = StandardScaler().fit(flat["train"][present["train"]] if present["train"].any() else flat["train"])
    scaled = {s: scaler.transform(flat[s]).astype(np.float32) for s in SPLITS}
    return {s: _zero_missing(sp.csr_matrix(scaled[s]), present[s]) for s in SPLITS}, described


def _pool_image(images: np.ndarray, side: int) -> np.ndarray:
    tensor = torch.from_numpy(images).float()
    if images.dtype == np.uint8:
        tensor = tensor / 255.0
    size = (min(side, tensor.shape[-2]), min(side, tensor.shape[-1]))
    return torch.nn.functional.adaptive_avg_pool2d(tensor, size).numpy()


def _zero_missing(features: sp.csr_matrix, present: np.ndarray) -> sp.csr_matrix:
    """A missing modality contributes nothing (the mask-bit features say it is missing)."""
    return sp.csr_matrix(sp.diags(present.astype(np.float32)) @ features)


def unit_block(features: dict[str, sp.csr_matrix]) -> dict[str, sp.csr_matrix]:
    """Scale a modality's features so that their mean squared row norm on train is 1: stacked side by side, a block
    of 768 standardised pixels would otherwise outweigh a TF-IDF block of norm 1 under one shared ``C``."""
    train = features["train"]
    mean_sq = float(train.multiply(train).sum()) / max(train.shape[0], 1)
    scale = 1.0 / math.sqrt(mean_sq) if mean_sq > 0 else 1.0
    return {s: (x * scale).tocsr() for s, x in features.items()}


# ---------------------------------------------------------------------------------------------- models
def make_model(task: TaskSpec, c: float) -> Any:
    if task.is_regression:
        return Ridge(alpha=1.0 / c)
    logistic = LogisticRegression(C=c, max_iter=3000)
    return OneVsRestClassifier(logistic) if task.kind == "multilabel" else logistic


def evaluate_model(model: Any, task: TaskSpec, features: sp.csr_matrix, target: np.ndarray, prefix: str) -> dict:
    """The run's metrics (``<prefix>acc`` ...) and ``<prefix>loss``, computed as the Lightning module does."""
    target_t = torch.from_numpy(target)
    if task.is_regression:
        logits = torch.from_numpy(np.asarray(model.predict(features), dtype=np.float32)).reshape(target_t.shape)
        preds = logits
    else:
        proba = torch.from_numpy(np.asarray(model.predict_proba(features), dtype=np.float64))
        logits, preds = task.logits_from_probabilities(proba)
    loss = task.loss()(logits.float(), task.loss_target(target_t))
    metrics = task.metrics(prefix)
    values = {k: float(v) for k, v in metrics(preds.float(), task.metric_target(target_t)).items()}
    values[f"{prefix}loss"] = float(loss)
    return values


def fit_and_select(
    task: TaskSpec,
    features: dict[str, sp.csr_matrix],
    targets: dict[str, np.ndarray],
    *,
    monitor: str,
    mode: str,
    grid: Sequence[float],
) -> dict[str, Any]:
    """Fit one model per ``C`` in ``grid`` on train, keep the best on val by ``monitor``, test it."""
    best: tuple[float, float, Any, dict] | None = None
    by_c = {}
    start = time.perf_counter()
    for c in grid:
        model = make_model(task, float(c)).fit(features["train"], _fit_target(task, targets["train"]))
        val = evaluate_model(model, task, features["val"], targets["val"], "val/")
        if monitor not in val:
            raise ValueError(
                f"monitor.metric={monitor!r} is not computed for a {task.kind} task; the baseline computes "
                f"{sorted(val)}"
            )
        score = val[monitor]
        by_c[str(c)] = score
        better = best is None or (score > best[0] if mode == "max" else score < best[0])
        if better and math.isfinite(score):
            best = (score, float(c), model, val)
    if best is None:
        raise RuntimeError(f"no value of C gave a finite {monitor} on the val split: {by_c}")
    score, c, model, val = best
    return {
        "C": c,
        "val_by_C": by_c,
        "val": val,
        "test": evaluate_model(model, task, features["test"], targets["test"], "test/"),
        "features": int(features["train"].shape[1]),
        "fit_seconds": round(time.perf_counter() - start, 3),
    }


def _fit_target(task: TaskSpec, target: np.ndarray) -> np.ndarray:
    """What the estimator fits: class indices, 0/1 labels (binary, multilabel) or the regression targets."""
    return task.metric_target(torch.from_numpy(target)).numpy()


# ---------------------------------------------------------------------------------------------- the run
def run_baseline(
    run: str | Path,
    *,
    grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
    settings: FeatureSettings | None = None,
    datamodule: pl.LightningDataModule | None = None,
) -> dict[str, Any]:
    """Fit, select and test the baselines of a run folder; write and merge their metrics (see the module docstring).

    ``datamodule``: the run's datamodule when the caller has it set up already (``mmfw-train baseline=true``);
    else it is rebuilt from the run folder's config.
    """
    from mmfw.evaluate import load_run_config  # evaluate imports much of mmfw; only needed here

    run_dir = run_folder.check_run_folder(run)
    cfg = load_run_config(run_dir)
    settings = settings or FeatureSettings()
    if datamodule is None:
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = hydra.utils.instantiate(cfg.datamodule)
        datamodule.prepare_data()
        datamodule.setup(None)
    task: TaskSpec = datamodule.task
    default_monitor(cfg, datamodule)  # monitor.metric=auto: the choice the run makes
    modalities = list(datamodule.modalities)
    kinds = modality_kinds(datamodule)
    monitor, mode = str(cfg.monitor.metric), str(cfg.monitor.mode)
    data = {s: split_arrays(datamodule, s, modalities) for s in SPLITS}
    targets = {s: data[s].target for s in SPLITS}
    features, described = {}, {}
    for j, m in enumerate(modalities):
        features[m], described[m] = modality_features(kinds[m], data, m, j, settings)
        features[m] = unit_block(features[m])
    feature_sets = {m: features[m] for m in modalities} if len(modalities) > 1 else {}
    masks = {s: sp.csr_matrix(data[s].mask.astype(np.float32)) for s in SPLITS}
    feature_sets[ALL] = {
        s: sp.hstack([features[m][s] for m in modalities] + ([masks[s]] if len(modalities) > 1 else []), format="csr")
        for s in SPLITS
    }
    models = {}
    for name, split_features in feature_sets.items():
        log.info("baseline %s: fitting on %d train samples", name, split_features["train"].shape[0])
        models[name] = fit_and_select(task, split_features, targets, monitor=monitor, mode=mode, grid=grid)
        models[name]["modalities"] = modalities if name == ALL else [name]
    baseline_metrics = {
        metric_name(name, key): value for name, result in models.items() for key, value in result["test"].items()
    }
    record = {
        "run": str(run_dir),
        "task": {"kind": task.kind, "num_outputs": task.num_outputs},
        "monitor": {"metric": monitor, "mode": mode},
        "split_sizes": {s: int(len(targets[s])) for s in SPLITS},
        "features": {m: {"kind": kinds[m], "description": described[m]} for m in modalities},
        "grid": [float(c) for c in grid],
        "models": models,
        "test_metrics": baseline_metrics,
    }
    out_dir = run_dir / BASELINE_DIR
    out_dir.mkdir(exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    merge_test_metrics(run_dir, baseline_metrics)
    run_folder.update_run_json(
        run_dir, baseline={"metrics_file": f"{BASELINE_DIR}/metrics.json", "C": {n: r["C"] for n, r in models.items()}}
    )
    print_comparison(run_dir, models)
    return record


def merge_test_metrics(run_dir: Path, baseline_metrics: dict[str, float]) -> dict[str, float]:
    """Replace the ``baseline...`` entries of ``test_metrics.json`` and run.json's ``test_metrics``."""

    def merged(existing: dict[str, float]) -> dict[str, float]:
        kept = {k: v for k, v in existing.items() if not k.startswith("baseline")}
        return dict(sorted((kept | baseline_metrics).items()))

    path = run_dir / "test_metrics.json"
    from_file = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(merged(from_file), indent=2) + "\n")
    record = run_folder.read_run_json(run_dir)
    return run_folder.update_run_json(run_dir, test_metrics=merged(record.get("test_metrics") or {}))["test_metrics"]


def print_comparison(run_dir: Path, models: dict[str, dict[str, Any]]) -> None:
    """The model's own test metrics beside the baselines' (one row each, so it fits a terminal)."""
    model_metrics = run_folder.read_run_json(run_dir).get("test_metrics") or {}
    names = list(models)[-1:] + list(models)[:-1]  # "all" first
    keys = list(models[ALL]["test"])
    table = Table(title=f"{run_dir.name}: test split, the model vs linear baselines (all modalities; each alone)")
    table.add_column("run / baseline", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("C (val)", justify="right")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    table.add_row("model", *[cell(model_metrics.get(k)) for k in keys], "")
    for name in names:
        row = [escape(metric_name(name, "")[:-1]), *[cell(models[name]["test"][k]) for k in keys]]
        table.add_row(*row, f"{models[name]['C']:g}")
    Console().print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="baseline")
def main(cfg: DictConfig) -> None:
    grid = [float(c) for c in cfg.grid]
    settings = FeatureSettings(**OmegaConf.to_container(cfg.features, resolve=True))
    run_baseline(cfg.run, grid=grid, settings=settings)


if __name__ == "__main__":
    main()
