"""The baseline's models: a scikit-learn linear model per value of ``C``, selected on val, scored with the run's own
loss and torchmetrics (:class:`mmfw.contracts.TaskSpec`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier

from mmfw.contracts import TaskSpec


def make_model(task: TaskSpec, c: float) -> Any:
    """Ridge (``alpha = 1 / C``) for regression; logistic regression, one per label where the labels are
    independent (:attr:`TaskSpec.independent_labels`)."""
    if task.is_regression:
        return Ridge(alpha=1.0 / c)
    logistic = LogisticRegression(C=c, max_iter=3000)
    return OneVsRestClassifier(logistic) if task.independent_labels else logistic


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
