"""The Objective contract: what differs between training objectives, and nothing else.

:class:`mmfw.module.MultimodalModule` keeps the loop (steps, epoch-end synchronisation, the best value, modality
dropout, the per-modality ablation, the NaN guard, the optimiser) and asks its Objective for the three things an
objective changes: the loss and the step's outputs (:meth:`Objective.loss_and_outputs`), the metrics of a split
(:meth:`Objective.metrics`, updated as ``metrics.update(outputs, target)``) and how wide the head over the fusion is
(:attr:`Objective.head_outputs`; None: no fusion and no head are built, e.g. contrastive alignment of the encoders).
An Objective is an ``nn.Module`` so that its own parameters (projection heads, a temperature) are trained and saved
with the model; the classifier's head stays the module's (``head.*`` in checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torchmetrics import MetricCollection

from mmfw.contracts import TaskSpec

if TYPE_CHECKING:
    from mmfw.module import MultimodalModule


class Objective(nn.Module):
    """Base class; a subclass is built as ``objective(task=..., in_dims={modality: encoder out_dim})``.

    Class attributes:
        auto_monitor: what ``monitor.metric=auto`` monitors (None: the task decides, :meth:`TaskSpec.auto_monitor`).
        ablation: whether ``model.modality_ablation`` applies (test metrics with each modality masked out).
        output_name: what the model's forward outputs, the name of an exported model's output (``mmfw-export``).
    """

    auto_monitor: ClassVar[str | None] = None
    ablation: ClassVar[bool] = True
    output_name: ClassVar[str] = "logits"

    def __init__(self, *, task: TaskSpec, in_dims: dict[str, int]) -> None:
        super().__init__()
        self.task = task
        self.in_dims = dict(in_dims)

    @property
    def head_outputs(self) -> int | None:
        """The width of the head over the fusion (the task's outputs for a classifier, 1 for a reward); None: the
        objective uses the encoders alone and the module builds neither fusion nor head."""
        return self.task.num_outputs

    def loss_and_outputs(
        self, module: MultimodalModule, batch: dict[str, Any], mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """``(loss, outputs, target)`` of one batch; ``mask`` overrides the batch's (modality dropout, ablation).
        The metrics take ``update(outputs, target)``; ``target.shape[0]`` weighs the batch in the epoch loss."""
        raise NotImplementedError

    def metrics(self, prefix: str, postfix: str | None = None) -> MetricCollection:
        """The metrics of one split, named ``<prefix><name><postfix>`` (``val/acc``, ``test/acc[-audio]``)."""
        raise NotImplementedError

    def metric_names(self, prefix: str) -> list[str]:
        """The names :meth:`metrics` logs for ``prefix`` (what ``monitor.metric`` may name)."""
        return list(self.metrics(prefix).keys())

    def prediction_columns(
        self, outputs: torch.Tensor, *, target_names: Sequence[str], label_delimiter: str = "|"
    ) -> dict[str, list[Any]]:
        """The forward's outputs ``(N, head_outputs)`` on single samples as columns of a predictions table
        (``mmfw-predict``): the task's (:meth:`TaskSpec.prediction_columns`: class and probabilities, or the value)."""
        return self.task.prediction_columns(outputs, target_names=target_names, label_delimiter=label_delimiter)

    def on_test_epoch_start(self, module: MultimodalModule) -> None:
        """Called before the test batches (the contrastive objective computes its class prototypes here)."""
