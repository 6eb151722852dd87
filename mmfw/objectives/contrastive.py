"""Contrastive alignment of two or more modalities in one embedding space (CLIP, Radford et al. 2021; SigLIP, Zhai et
al. 2023). With ``z^m_i = P_m(f_m(x^m_i)) / ||·||`` the L2-normalised projection of sample ``i``'s modality ``m`` and
``s_ij = t · <z^a_i, z^b_j>`` for a pair of modalities ``(a, b)``, over the ``N`` samples that have both::

    InfoNCE (symmetric):  L_ab = ½ [ -1/N Σ_i log softmax_j(s_ij)_i  -  1/N Σ_j log softmax_i(s_ij)_j ]
    sigmoid (SigLIP):     L_ab = -1/N Σ_i Σ_j log σ( y_ij (s_ij + b) ),   y_ij = +1 if i = j else -1

``t = exp(τ)`` with ``τ`` learnable, clamped to ``t ≤ 100`` as CLIP does; ``b`` a learnable bias (sigmoid only). With
more than two modalities the loss is the mean of ``L_ab`` over all pairs. Under DDP every rank gathers all ranks'
embeddings with :func:`gather_with_grad`, so the negatives span the global batch and the loss (and, after DDP's
gradient averaging, every gradient) equals that of one process on the global batch.

Retrieval (:mod:`mmfw.objectives.retrieval`): the embeddings of a whole split, gathered across ranks, and for each query
``i`` of modality ``a`` the rank of its own match among all ``b`` samples (1 = retrieved first; ties count against the
query, so a collapsed embedding scores chance, not perfect): recall@k both ways and the median rank.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from mmfw.contracts import MASK_KEY, TARGET_KEY, TaskSpec
from mmfw.objectives.base import Objective
from mmfw.objectives.retrieval import Embedded, SplitRetrieval, ZeroShotAccuracy

LossKind = Literal["infonce", "sigmoid"]


class ProjectionHeads(nn.Module):
    """One head per modality into the shared ``embed_dim``-space, L2-normalised: ``z = P_m(h) / ||P_m(h)||``.

    Args:
        in_dims: ``{modality: encoder out_dim}``.
        embed_dim: width of the shared space.
        hidden_dim: None: ``P_m`` is linear (CLIP); else ``Linear → GELU → Linear`` with this hidden width.
    """

    def __init__(self, in_dims: dict[str, int], *, embed_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.out_dim = embed_dim

        def head(d: int) -> nn.Module:
            if hidden_dim is None:
                return nn.Linear(d, embed_dim)
            return nn.Sequential(nn.Linear(d, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))

        self.heads = nn.ModuleDict({m: head(d) for m, d in in_dims.items()})

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{m: (B, D_m) or (B, T, D_m)}`` → ``{m: (B, embed_dim)}``, unit norm; token features are mean-pooled."""
        out = {}
        for m, head in self.heads.items():
            x = features[m]
            out[m] = F.normalize(head(x.mean(dim=1) if x.dim() == 3 else x), dim=-1)
        return out


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' ``(n_r, ...)`` tensors concatenated in rank order; the backward pass sums every rank's gradient of
    the gathered tensor and returns this rank's rows (what ``torch.distributed.nn.functional.all_gather`` does, for
    rows that may differ in number between ranks)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        world = dist.get_world_size()
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def gather_with_grad(x: Tensor) -> Tensor:
    """``x (n, ...)`` of every rank concatenated in rank order ``(Σ n_r, ...)``, differentiable w.r.t. this rank's
    rows; ``x`` itself outside a distributed run."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE or the sigmoid pairwise loss over every pair of modalities (see the module docstring).

    Args:
        kind: ``infonce`` (CLIP) or ``sigmoid`` (SigLIP).
        init_temperature: initial ``1 / t``: 0.07 for InfoNCE (CLIP), 0.1 for sigmoid (SigLIP's ``t = 10``).
        max_scale: ``t`` is clamped to at most this (CLIP: 100), keeping the logits' range bounded.
        init_bias: initial ``b`` of the sigmoid loss (SigLIP: -10, so that the many negatives start near 0).
        learnable: train ``τ`` (and ``b``); else they stay at their initial values.
        gather: under DDP, gather the embeddings of all ranks (negatives span the global batch).
    """

    def __init__(
        self,
        *,
        kind: LossKind = "infonce",
        init_temperature: float | None = None,
        max_scale: float = 100.0,
        init_bias: float = -10.0,
        learnable: bool = True,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if kind not in ("infonce", "sigmoid"):
            raise ValueError(f"contrastive loss kind must be 'infonce' or 'sigmoid', got {kind!r}")
        temperature = init_temperature if init_temperature is not None else (0.07 if kind == "infonce" else 0.1)
        if not (temperature > 0 and 1 / temperature <= max_scale):
            raise ValueError(f"init_temperature must be >= 1/max_scale = {1 / max_scale}, got {temperature}")
        self.kind, self.max_log_scale, self.gather = kind, math.log(max_scale), gather
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.tensor(float(init_bias)), requires_grad=learnable) if kind == "sigmoid" else None

    @property
    def scale(self) -> Tensor:
        """``t = exp(τ)``, clamped to ``max_scale`` (the clamp passes no gradient beyond it, as in CLIP)."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def pair_loss(self, a: Tensor, b: Tensor) -> Tensor:
        """``L_ab`` for matched rows ``a (N, D)``, ``b (N, D)`` (unit norm)."""
        logits = self.scale * a @ b.T  # (N, N)
        if self.kind == "infonce":
            target = torch.arange(a.shape[0], device=a.device)
            return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        signs = 2 * torch.eye(a.shape[0], device=a.device, dtype=logits.dtype) - 1  # +1 diagonal, -1 elsewhere
        return -F.logsigmoid(signs * (logits + self.bias)).sum() / a.shape[0]

    def forward(self, embeddings: dict[str, Tensor], present: Tensor | None = None) -> Tensor:
        """embeddings ``{m: (B, D)}`` (unit norm, the mask's column order); present bool ``(B, M)`` or None (all).

        Each pair of modalities uses the samples that have both; a pair no sample has is left out of the mean.
        """
        names = list(embeddings)
        if present is None:
            present = torch.ones(next(iter(embeddings.values())).shape[0], len(names), dtype=torch.bool)
        present = present.to(next(iter(embeddings.values())).device)
        if self.gather:
            embeddings = {m: gather_with_grad(z) for m, z in embeddings.items()}
            present = gather_with_grad(present.to(torch.uint8)).bool()  # no gradient: a plain gather
        losses = []
        for (i, a), (j, b) in combinations(enumerate(names), 2):
            both = present[:, i] & present[:, j]
            if both.any():
                losses.append(self.pair_loss(embeddings[a][both], embeddings[b][both]))
        if not losses:  # no sample has two modalities: a zero that still reaches the parameters (DDP needs them)
            return sum(z.sum() for z in embeddings.values()) * 0.0 + self.log_scale * 0.0
        return torch.stack(losses).mean()


class Contrastive(Objective):
    """``objective=contrastive``: align the encoders' outputs in one embedding space (no fusion, no head).

    The positives are the modalities of one sample; the loss is :class:`ContrastiveLoss` over
    :class:`ProjectionHeads`. Validation and test report :class:`RetrievalMetrics` (recall@k both ways, median
    rank); the test also zero-shot accuracy (:class:`ZeroShotAccuracy`) for a multiclass task.

    Args:
        task: the datamodule's task (its labels: retrieval with ``match=label``, zero-shot classes).
        in_dims: ``{modality: encoder out_dim}``; at least two modalities.
        embed_dim, hidden_dim: the projection heads (:class:`ProjectionHeads`).
        loss: ``infonce`` (CLIP) or ``sigmoid`` (SigLIP).
        init_temperature, max_scale, learnable_temperature: the temperature (:class:`ContrastiveLoss`).
        match: what retrieval counts as a hit: ``instance`` (the sample's own other modality) or ``label`` (any
            sample of the same class: data paired by class, such as AV-digits).
        ks: the ``k`` of recall@k.
        zero_shot: report zero-shot accuracy at test (multiclass tasks; one pass over the training split).
    """

    auto_monitor = "val/recall@1"
    ablation = False  # a retrieval with one modality masked out has no queries: nothing to report

    def __init__(
        self,
        *,
        task: TaskSpec,
        in_dims: dict[str, int],
        embed_dim: int = 128,
        hidden_dim: int | None = None,
        loss: LossKind = "infonce",
        init_temperature: float | None = None,
        max_scale: float = 100.0,
        learnable_temperature: bool = True,
        match: Literal["instance", "label"] = "instance",
        ks: tuple[int, ...] = (1, 5, 10),
        zero_shot: bool = True,
    ) -> None:
        super().__init__(task=task, in_dims=in_dims)
        if len(in_dims) < 2:
            raise ValueError(
                f"objective=contrastive aligns two or more modalities, the model has {list(in_dims)}: "
                "set `modalities` to at least two"
            )
        if match == "label" and task.kind not in ("multiclass", "binary"):
            raise ValueError(f"objective.match=label needs class labels, the task is {task.kind}: use match=instance")
        self.modalities = list(in_dims)
        self.projections = ProjectionHeads(in_dims, embed_dim=embed_dim, hidden_dim=hidden_dim)
        self.loss = ContrastiveLoss(
            kind=loss, init_temperature=init_temperature, max_scale=max_scale, learnable=learnable_temperature
        )
        self.match, self.ks = match, tuple(ks)
        self.zero_shot = zero_shot and task.kind == "multiclass"

    @property
    def head_outputs(self) -> None:
        return None

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """Encoder outputs → unit embeddings ``{m: (B, embed_dim)}``."""
        return self.projections(features)

    def loss_and_outputs(
        self, module: Any, batch: dict[str, Any], mask: Tensor | None
    ) -> tuple[Tensor, Embedded, Tensor]:
        present = batch[MASK_KEY] if mask is None else mask
        embeddings = self.projections(module.encode(batch))
        return self.loss(embeddings, present), Embedded(embeddings, present), batch[TARGET_KEY]

    def metrics(self, prefix: str, postfix: str | None = None) -> MetricCollection:
        metrics: dict[str, Metric] = {}
        if prefix != "train/":  # a whole training split's similarity matrix each epoch: too costly for a curve
            metrics["retrieval"] = SplitRetrieval(self.modalities, ks=self.ks, match=self.match)
        if prefix == "test/" and self.zero_shot:
            metrics["zeroshot"] = ZeroShotAccuracy(self.modalities)
        return MetricCollection(metrics, prefix=prefix, postfix=postfix, compute_groups=False)

    def metric_names(self, prefix: str) -> list[str]:
        pairs = [f"{a}_to_{b}" for a in self.modalities for b in self.modalities if a != b]
        if prefix == "train/":
            return []
        names = [f"{prefix}recall@{k}{suffix}" for k in self.ks for suffix in ["", *(f"_{p}" for p in pairs)]]
        return [*names, *(f"{prefix}median_rank_{p}" for p in pairs)]

    @torch.no_grad()
    def on_test_epoch_start(self, module: Any) -> None:
        """Class prototypes for zero-shot accuracy: per modality, the unit mean embedding of each class over the
        training split (every rank reads the whole split, so all ranks hold the same prototypes)."""
        zero_shot = [m for m in module.test_metrics.values() if isinstance(m, ZeroShotAccuracy)]
        if not zero_shot:
            return
        datamodule = module.trainer.datamodule
        datamodule.setup("fit")  # mmfw-eval sets up the test split only
        classes = self.task.num_outputs
        sums = {m: torch.zeros(classes, self.projections.out_dim, device=module.device) for m in self.modalities}
        for batch in datamodule.train_dataloader():
            batch = move_data_to_device(batch, module.device)
            embeddings = self.projections(module.encode(batch))
            for j, m in enumerate(self.modalities):
                present = batch[MASK_KEY][:, j]
                sums[m].index_add_(0, batch[TARGET_KEY][present].long(), embeddings[m][present].float())
        prototypes = {m: F.normalize(s, dim=-1) for m, s in sums.items()}  # a class without samples: zero, never won
        for metric in zero_shot:
            metric.prototypes = prototypes
