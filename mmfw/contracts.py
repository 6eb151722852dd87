"""The batch and task contracts shared by every datamodule, encoder, fusion method and the module.

A batch is a dict: one entry per modality (a tensor, or a dict of tensors for tabular data, batch
first), ``mask`` — a bool tensor ``(B, M)`` whose column ``j`` says whether modality ``modalities[j]``
is present for each sample — ``target``, and ``modalities``: the names of the mask columns, in order (added by the
datamodules' collate function and checked by the module where the features meet the mask). Missing data and
modality dropout only flip mask bits. Optionally ``features``: ``{modality: encoder output}`` precomputed for frozen
encoders (:mod:`mmfw.feature_cache`), used by the model instead of running that encoder.

:class:`TaskSpec` is the one place that knows what a task kind means for the loss, the metrics and the targets;
nothing else branches on ``task.kind``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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

TaskKind = Literal["multiclass", "binary", "multilabel", "regression"]
TASK_KINDS: tuple[str, ...] = ("multiclass", "binary", "multilabel", "regression")
KINDS: tuple[str, ...] = ("image", "audio", "text", "tabular")  # modality kinds: one manifest codec each
MASK_KEY = "mask"
TARGET_KEY = "target"
FEATURES_KEY = "features"
MODALITIES_KEY = "modalities"
MINORITY_AUROC = 0.35
"""``monitor.metric=auto`` monitors ``val/auroc`` for a binary task whose rarer class is below this share of the
training split (accuracy rewards predicting the majority there), ``val/acc`` for other classification tasks and
``val/mse`` for regression."""


@dataclass(frozen=True)
class TaskSpec:
    """What the model predicts; built by the datamodule from the data, never typed in config.

    ``num_outputs`` is the width of the logits: classes (multiclass), 1 (binary), labels
    (multilabel) or regression targets.
    """

    kind: TaskKind
    num_outputs: int
    class_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be multiclass|binary|multilabel|regression, got {self.kind!r}")
        if self.num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {self.num_outputs}")

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def independent_labels(self) -> bool:
        """Each output is its own yes/no question (multilabel): a single-label classifier, such as the baseline's
        logistic regression, is fitted once per output."""
        return self.kind == "multilabel"

    @property
    def default_monitor(self) -> str:
        """The validation metric ``monitor.metric=auto`` picks (before the class-balance rule of binary tasks)."""
        return "val/mse" if self.is_regression else "val/acc"

    def auto_monitor(self, train_target: Callable[[], torch.Tensor | None]) -> str:
        """What ``monitor.metric=auto`` monitors (see :data:`MINORITY_AUROC`); ``train_target`` gives the training
        split's targets, read only for a binary task."""
        if self.kind == "binary":
            target = train_target()
            if target is not None and len(target):
                positive = float(torch.as_tensor(target, dtype=torch.float32).mean())
                if min(positive, 1 - positive) < MINORITY_AUROC:
                    return "val/auroc"
        return self.default_monitor

    def metrics(self, prefix: str, postfix: str | None = None, *, validate_args: bool = True) -> MetricCollection:
        """Metrics for one split; ``prefix`` is ``"train/"``, ``"val/"`` or ``"test/"``; ``postfix`` e.g.
        ``"[-audio]"``. Named ``split/metric`` (``val/acc``, ``test/f1_macro``).

        ``validate_args=False`` skips the classification metrics' checks of every update's predictions and targets
        (host-device syncs on a GPU), for inputs already known to be valid.
        """
        n = self.num_outputs
        checks = {"validate_args": validate_args}
        if self.kind == "multiclass":
            metrics = {
                "acc": MulticlassAccuracy(num_classes=n, average="micro", **checks),
                "f1_macro": MulticlassF1Score(num_classes=n, average="macro", **checks),
            }
        elif self.kind == "binary":
            metrics = {"acc": BinaryAccuracy(**checks), "f1": BinaryF1Score(**checks), "auroc": BinaryAUROC(**checks)}
        elif self.kind == "multilabel":
            metrics = {
                "acc": MultilabelAccuracy(num_labels=n, average="micro", **checks),
                "f1_macro": MultilabelF1Score(num_labels=n, average="macro", **checks),
            }
        else:
            metrics = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}
        return MetricCollection(metrics, prefix=prefix, postfix=postfix)

    def loss(self) -> torch.nn.Module:
        """The loss that matches the task: cross-entropy, BCE-with-logits or MSE."""
        if self.kind == "multiclass":
            return torch.nn.CrossEntropyLoss()
        if self.kind in ("binary", "multilabel"):
            return torch.nn.BCEWithLogitsLoss()
        return torch.nn.MSELoss()

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_outputs)`` as the loss and metrics take them: ``(B,)`` for one binary/regression output."""
        if self.kind in ("binary", "regression") and logits.shape[-1] == 1:
            return logits.squeeze(-1)
        return logits

    def loss_target(self, target: torch.Tensor) -> torch.Tensor:
        """Class indices (multiclass) stay as they are; the other losses take floats."""
        return target if self.kind == "multiclass" else target.float()

    def metric_target(self, target: torch.Tensor) -> torch.Tensor:
        """Binary and multilabel metrics take integer labels; the others take the target as it is."""
        return target.long() if self.kind in ("binary", "multilabel") else target

    def prepare(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(outputs, loss target, metric target)`` for one batch."""
        return self.outputs(logits), self.loss_target(target), self.metric_target(target)

    def logits_from_probabilities(self, proba: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, scores)`` of a classifier that outputs class probabilities ``(N, classes)`` (the baseline):
        binary keeps the positive class (``logit(p)``), multiclass/multilabel take ``log p``; scores are the
        probabilities the metrics take."""
        if self.kind == "binary":
            p = proba[:, 1].clamp(1e-7, 1 - 1e-7)
            return torch.log(p) - torch.log1p(-p), p
        p = proba.clamp_min(1e-12)
        return torch.log(p), p

    def prediction_columns(
        self, logits: torch.Tensor, *, target_names: Sequence[str], label_delimiter: str = "|"
    ) -> dict[str, list[Any]]:
        """Logits ``(N, num_outputs)`` as the columns of a predictions table, per sample: ``prediction`` (a class
        name; for multilabel the labels at probability >= 0.5 joined by ``label_delimiter``; the value for
        regression) and ``p_<class>`` per class, or ``prediction_<target>`` per target of a multi-output regression.
        ``target_names`` are the target columns (they name a multi-output regression's values)."""
        logits = logits.float()
        if self.is_regression:
            if self.num_outputs == 1:
                return {"prediction": logits[:, 0].tolist()}
            return {f"prediction_{name}": logits[:, j].tolist() for j, name in enumerate(target_names)}
        names = list(self.class_names or range(self.num_outputs))
        if self.kind == "multiclass":
            proba = torch.softmax(logits, dim=1)
            predicted = [names[i] for i in proba.argmax(dim=1).tolist()]
        elif self.kind == "binary":
            positive = torch.sigmoid(logits[:, 0])
            proba = torch.stack([1 - positive, positive], dim=1)
            predicted = [names[int(p >= 0.5)] for p in positive.tolist()]
        else:
            proba = torch.sigmoid(logits)
            predicted = [label_delimiter.join(str(names[j]) for j in torch.nonzero(row >= 0.5).flatten().tolist())
                         for row in proba]  # fmt: skip
        return {"prediction": predicted, **{f"p_{name}": proba[:, j].tolist() for j, name in enumerate(names)}}

    def target_tensor(self, encoded: Sequence[Any]) -> torch.Tensor:
        """A split's encoded targets as the batch carries them: ``(N,)`` long class indices (multiclass), ``(N,)``
        float (binary, one regression target) or ``(N, num_outputs)`` float (multilabel, several targets)."""
        if self.kind == "multiclass":
            return torch.tensor(encoded, dtype=torch.long)
        target = torch.tensor(encoded, dtype=torch.float32)
        if self.kind == "multilabel" or self.num_outputs > 1:
            target = target.reshape(len(encoded), self.num_outputs)
        return target


def check_modality_order(batch_order: Sequence[str] | None, model_order: Sequence[str]) -> None:
    """Refuse a batch whose mask columns name other modalities, or the same in another order, than the model's.

    ``batch_order`` is ``batch["modalities"]`` (None for a batch built by hand without it: nothing to check).
    """
    if batch_order is not None and tuple(batch_order) != tuple(model_order):
        raise ValueError(
            f"the batch's mask columns are {list(batch_order)} (the datamodule's `modalities`) but the model's "
            f"encoders and fusion were built for {list(model_order)}: build the model from the same `modalities`"
        )


def drop_modalities(mask: torch.Tensor, modalities: list[str], absent: list[str]) -> torch.Tensor:
    """Return a copy of ``mask`` (B, M) with the columns of the ``absent`` modalities set to False."""
    unknown = sorted(set(absent) - set(modalities))
    if unknown:
        raise KeyError(f"cannot mask out {unknown}: the model's modalities are {modalities}")
    mask = mask.clone()
    for name in absent:
        mask[:, modalities.index(name)] = False
    return mask
