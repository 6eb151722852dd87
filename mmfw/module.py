"""The LightningModule: per-modality encoders -> fusion -> head, trained on an objective (a task loss by default)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, MinMetric

from mmfw.contracts import (
    FEATURES_KEY,
    MASK_KEY,
    MODALITIES_KEY,
    TaskSpec,
    check_modality_order,
    drop_modalities,
)
from mmfw.feature_cache import is_frozen
from mmfw.fusion.factory import build_fusion
from mmfw.objectives.base import Objective
from mmfw.objectives.classify import Classify

# Lightning advises sync_dist=True for every epoch-level value under DDP; this module logs values that torchmetrics
# has already synchronised, and sync_dist is what made the ranks' collectives diverge (see MultimodalModule.__init__).
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(", category=PossibleUserWarning)


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite; the last good checkpoint stays on disk."""


class MultimodalModule(pl.LightningModule):
    """Encoders + fusion + head, trained on the task the datamodule describes.

    Args:
        encoders: one encoder per modality, in the order of the batch's mask columns.
        fusion: factory ``fusion(in_dims={modality: encoder.out_dim}) -> nn.Module`` (a Hydra partial); a fusion
            that outputs logits (late) also gets the task's ``num_outputs`` (:mod:`mmfw.fusion.factory`).
        head: factory ``head(in_features, out_features) -> nn.Module``; unused when the fusion outputs logits.
        task: what to predict (from the datamodule).
        optimizer: factory ``optimizer(params) -> Optimizer``.
        scheduler: optional factory ``scheduler(optimizer) -> LRScheduler``, stepped every epoch.
        loss: optional loss module; defaults to the task's loss (cross-entropy, BCE-with-logits, MSE).
        modality_dropout: probability of masking each present modality of a training sample (at least one
            present modality is always kept).
        monitor: the metric that checkpointing, early stopping and sweeps optimise, e.g. ``val/acc``.
        monitor_mode: ``max`` or ``min``; ``<monitor>_best`` is logged every validation epoch.
        modality_ablation: at test time also report metrics with each modality masked out
            (``test/acc[-audio]``), the modality contribution.
        compile: compile the forward pass with ``torch.compile`` (the first steps take longer; the weights' names,
            hence checkpoints, are those of the uncompiled module).
        compile_options: keyword arguments of ``torch.compile`` (``mode``, ``backend``, ``dynamic``).
        channels_last: keep 4-D inputs (images, spectrograms) and the convolution weights in channels-last memory
            format, which GPUs' convolutions (tensor cores, bf16/fp16) run faster in.
        objective: factory ``objective(task, in_dims) -> Objective`` (``objective=...``, :mod:`mmfw.objectives`):
            the loss, outputs and metrics of each step; None: :class:`~mmfw.objectives.classify.Classify`.
    """

    def __init__(
        self,
        *,
        encoders: dict[str, nn.Module],
        fusion: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        task: TaskSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        loss: nn.Module | None = None,
        modality_dropout: float = 0.0,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        modality_ablation: bool = True,
        compile: bool = False,
        compile_options: dict | None = None,
        channels_last: bool = False,
        objective: Callable[..., Objective] | None = None,
    ) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("MultimodalModule needs at least one encoder: check `modalities`")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"model.modality_dropout must be in [0, 1), got {modality_dropout}")
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"monitor mode must be 'max' or 'min', got {monitor_mode!r}")
        self.modalities = list(encoders)
        self.task = task
        self.encoders = nn.ModuleDict(encoders)
        in_dims = {name: int(enc.out_dim) for name, enc in encoders.items()}
        objective_ = (objective or Classify)(task=task, in_dims=in_dims)
        self.fusion, self.head = self._fusion_and_head(fusion, head, in_dims, objective_.head_outputs)
        self.objective = objective_
        self.loss_fn = loss if loss is not None else task.loss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.modality_dropout = modality_dropout
        self.monitor = monitor
        self.monitor_mode = monitor_mode

        self.train_metrics = self.objective.metrics("train/")
        self.val_metrics = self.objective.metrics("val/")
        self.test_metrics = self.objective.metrics("test/")
        # Epoch losses are torchmetrics too, synchronised in the epoch-end hooks with the other metrics. Values
        # logged with sync_dist are all-reduced whenever something reads them (a progress bar on rank 0 only), so
        # the ranks would issue collectives in different orders and hang.
        # The training loss mean skips torchmetrics' NaN check (a host copy every step): the NaN check below raises.
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(nan_strategy="disable"), MeanMetric(), MeanMetric()
        # The first non-finite training loss, recorded on the device (step -1: none yet) and raised at the next log
        # point, validation or checkpoint (_raise_if_non_finite): reading the loss every step would stall a GPU.
        self.register_buffer("_non_finite_step", torch.tensor(-1), persistent=False)
        self.register_buffer("_non_finite_batch", torch.tensor(-1), persistent=False)
        self.register_buffer("_non_finite_loss", torch.tensor(0.0), persistent=False)
        ablate = modality_ablation and self.objective.ablation and len(self.modalities) > 1
        ablations = self.modalities if ablate else []
        self.ablation_metrics = nn.ModuleDict(
            {name: self.objective.metrics("test/", postfix=f"[-{name}]") for name in ablations}
        )
        # Fed with synchronised values: nothing to synchronise again.
        self.val_best = MaxMetric(sync_on_compute=False) if monitor_mode == "max" else MinMetric(sync_on_compute=False)
        # Saved in checkpoints, so a resumed run keeps its best so far.
        self.val_best.persistent(True)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-D weights only; the others keep their layout
        if compile:
            super().compile(**(compile_options or {}))
        monitorable = [*self.objective.metric_names("val/"), "val/loss"]
        if monitor not in monitorable:
            raise ValueError(
                f"monitor.metric={monitor!r} is not computed for a {task.kind} task with objective "
                f"{type(self.objective).__name__}: choose one of {monitorable} "
                "(monitor.mode follows it: min for losses and errors)"
            )

    @staticmethod
    def _fusion_and_head(
        fusion: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        in_dims: dict[str, int],
        num_outputs: int | None,
    ) -> tuple[nn.Module | None, nn.Module | None]:
        """The fusion and the head that maps its output to ``num_outputs``; none for an objective that uses the
        encoders alone (``num_outputs`` None: contrastive); no head (Identity) for a fusion that outputs logits."""
        if num_outputs is None:
            return None, None
        fused = build_fusion(fusion, in_dims=in_dims, num_outputs=num_outputs)
        if not getattr(fused, "outputs_logits", False):
            return fused, head(in_features=fused.out_dim, out_features=num_outputs)
        if fused.out_dim != num_outputs:
            raise ValueError(
                f"fusion outputs {fused.out_dim} logits but the objective needs {num_outputs} outputs "
                f"(num_outputs): {type(fused).__name__} must output num_outputs logits"
            )
        return fused, nn.Identity()

    # ---------------------------------------------------------------- forward
    def forward(self, batch: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_outputs)`` for a batch (a reward ``(B, 1)`` for ``objective=preference``; for
        ``objective=contrastive``, which has no fusion, ``{modality: (B, embed_dim)}`` unit embeddings); ``mask``
        overrides ``batch["mask"]`` (B, M).

        The batch's ``modalities`` (its mask columns' names) must be the model's, in the same order. A modality whose
        encoder output the batch already carries (``batch["features"]``, see
        :mod:`mmfw.feature_cache`) is not encoded again.
        """
        mask = batch[MASK_KEY] if mask is None else mask
        features = self.encode(batch)
        if self.fusion is None:  # an objective without fusion (contrastive): the embeddings it defines
            return self.objective(features)
        return self.head(self.fusion(features, mask))

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{modality: encoder output}``: the batch's cached features (``batch["features"]``) or the encoder's."""
        check_modality_order(batch.get(MODALITIES_KEY), self.modalities)
        cached = batch.get(FEATURES_KEY) or {}
        return {
            name: cached[name] if name in cached else encoder(self._layout(batch[name]))
            for name, encoder in self.encoders.items()
        }

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _loss_and_outputs(self, batch: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> tuple:
        """``(loss, outputs, target)``: the objective's (:meth:`mmfw.objectives.base.Objective.loss_and_outputs`)."""
        return self.objective.loss_and_outputs(self, batch, mask)

    def _dropout_mask(self, mask: torch.Tensor) -> torch.Tensor:
        if self.modality_dropout == 0.0:
            return mask
        keep = torch.rand(mask.shape, device=mask.device) >= self.modality_dropout
        dropped = mask & keep
        # A sample that lost every modality keeps one of those it had, chosen at random.
        empty = ~dropped.any(dim=1) & mask.any(dim=1)
        if empty.any():
            scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0)
            rescue = torch.zeros_like(mask).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
            dropped = torch.where(empty[:, None], rescue, dropped)
        return dropped

    def train(self, mode: bool = True) -> MultimodalModule:
        """A frozen encoder (no trained parameter) stays in eval mode: no dropout, no drifting batch-norm statistics,
        so its output depends on its input alone (what the frozen-feature cache relies on)."""
        super().train(mode)
        for encoder in self.encoders.values():
            if is_frozen(encoder):
                encoder.eval()
        return self

    # ---------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, target = self._loss_and_outputs(batch, self._dropout_mask(batch[MASK_KEY]))
        first = ~torch.isfinite(loss.detach()) & (self._non_finite_step < 0)
        self._non_finite_step.masked_fill_(first, self.global_step)
        self._non_finite_batch.masked_fill_(first, batch_idx)
        self._non_finite_loss.copy_(torch.where(first, loss.detach(), self._non_finite_loss))
        self.train_metrics.update(logits, target)
        # MeanMetric's weighted update ignores the weight when its NaN check is disabled: one value per sample.
        self.train_loss.update(loss.detach().expand(target.shape[0]))
        log_every = self._trainer.log_every_n_steps if self._trainer is not None else 0
        if log_every and (self.global_step + 1) % log_every == 0:
            self._raise_if_non_finite()
            # This rank's step loss at the trainer's log points, for the step curve and the progress bar. A host
            # copy: Lightning reads a logged progress-bar value every step, and on the host that costs no sync.
            self.log("train/loss_step", loss.detach().cpu(), prog_bar=True, batch_size=target.shape[0])
        return loss

    def _raise_if_non_finite(self) -> None:
        """Raise NonFiniteLossError if a training loss since the start was NaN or infinite (one host copy)."""
        step = int(self._non_finite_step)
        if step >= 0:
            raise NonFiniteLossError(
                f"training loss is {float(self._non_finite_loss)} at global step {step} (epoch {self.current_epoch}, "
                f"batch {int(self._non_finite_batch)}); the last good checkpoint is kept. Lower model.optimizer.lr "
                "or enable trainer.gradient_clip_val."
            )

    def on_validation_start(self) -> None:
        self._raise_if_non_finite()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """No checkpoint holds weights trained on a non-finite loss: the last good one stays."""
        self._raise_if_non_finite()

    def on_train_epoch_end(self) -> None:
        self._raise_if_non_finite()
        self.log_dict(self._compute_epoch(self.train_metrics, self.train_loss))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits, target = self._loss_and_outputs(batch)
        self.val_metrics.update(logits, target)
        self.val_loss.update(loss, weight=target.shape[0])

    def on_validation_epoch_end(self) -> None:
        values = self._compute_epoch(self.val_metrics, self.val_loss)
        self.log_dict(values, prog_bar=True)
        # The sanity check's validation values must not count towards the best.
        if self.monitor in values and not self.trainer.sanity_checking:
            self.val_best.update(values[self.monitor])
            self.log(f"{self.monitor}_best", self.val_best.compute(), prog_bar=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits, target = self._loss_and_outputs(batch)
        self.test_metrics.update(logits, target)
        self.test_loss.update(loss, weight=target.shape[0])
        for name, metrics in self.ablation_metrics.items():
            mask = drop_modalities(batch[MASK_KEY], self.modalities, [name])
            _, ablated_logits, _ = self._loss_and_outputs(batch, mask)
            metrics.update(ablated_logits, target)

    def on_test_epoch_start(self) -> None:
        self.objective.on_test_epoch_start(self)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._compute_epoch(self.test_metrics, self.test_loss))
        for metrics in self.ablation_metrics.values():
            self.log_dict(metrics.compute())
            metrics.reset()

    def _compute_epoch(self, metrics: MetricCollection, loss: MeanMetric) -> dict[str, torch.Tensor]:
        """A split's metrics and its mean loss over the epoch (``<split>/loss``), synchronised over all ranks.

        Every rank calls this in the same hook, so the collectives run in the same order on all ranks; the values
        are logged as they are (without ``sync_dist``), already equal on every rank.
        """
        values = {**metrics.compute(), f"{metrics.prefix}loss": loss.compute()}
        metrics.reset()
        loss.reset()
        return values

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.monitor},
        }
