"""``objective=classify`` (the default): the task's supervised loss and metrics over ``head(fusion(encoders))``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torchmetrics import MetricCollection

from mmfw.contracts import TARGET_KEY
from mmfw.objectives.base import Objective

if TYPE_CHECKING:
    from mmfw.module import MultimodalModule


class Classify(Objective):
    """Classification or regression as the datamodule's :class:`~mmfw.contracts.TaskSpec` describes it: the loss is
    the module's ``loss_fn`` (``model.loss``, else the task's), the metrics the task's."""

    def loss_and_outputs(
        self, module: MultimodalModule, batch: dict[str, Any], mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, loss_target, metric_target = self.task.prepare(module(batch, mask), batch[TARGET_KEY])
        return module.loss_fn(logits, loss_target), logits, metric_target

    def metrics(self, prefix: str, postfix: str | None = None) -> MetricCollection:
        # Training metrics skip per-update argument checks (host syncs on a GPU): the loss has rejected a bad target.
        return self.task.metrics(prefix, postfix, validate_args=prefix != "train/")
