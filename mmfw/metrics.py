"""torchmetrics collections per task kind, named ``split/metric`` (``val/acc``, ``test/f1_macro``)."""

from __future__ import annotations

import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelF1Score,
)

from mmfw.data.batch import TaskSpec


def build_metrics(
    task: TaskSpec, prefix: str, postfix: str | None = None, *, validate_args: bool = True
) -> MetricCollection:
    """Metrics for one split; ``prefix`` is ``"train/"``, ``"val/"`` or ``"test/"``; ``postfix`` e.g. ``"[-audio]"``.

    ``validate_args=False`` skips the classification metrics' checks of every update's predictions and targets
    (host-device syncs on a GPU), for inputs already known to be valid.
    """
    n = task.num_outputs
    checks = {"validate_args": validate_args}
    if task.kind == "multiclass":
        metrics = {
            "acc": MulticlassAccuracy(num_classes=n, average="micro", **checks),
            "f1_macro": MulticlassF1Score(num_classes=n, average="macro", **checks),
        }
    elif task.kind == "binary":
        metrics = {"acc": BinaryAccuracy(**checks), "f1": BinaryF1Score(**checks), "auroc": BinaryAUROC(**checks)}
    elif task.kind == "multilabel":
        metrics = {
            "acc": MultilabelAccuracy(num_labels=n, average="micro", **checks),
            "f1_macro": MultilabelF1Score(num_labels=n, average="macro", **checks),
        }
    else:
        metrics = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}
    return MetricCollection(metrics, prefix=prefix, postfix=postfix)


def default_loss(task: TaskSpec) -> torch.nn.Module:
    """The loss that matches the task: cross-entropy, BCE-with-logits or MSE."""
    if task.kind == "multiclass":
        return torch.nn.CrossEntropyLoss()
    if task.kind in ("binary", "multilabel"):
        return torch.nn.BCEWithLogitsLoss()
    return torch.nn.MSELoss()


def predictions(task: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
    """Turn logits ``(B, num_outputs)`` into what the task's metrics and loss expect."""
    if task.kind in ("binary", "regression") and logits.shape[-1] == 1:
        return logits.squeeze(-1)
    return logits
