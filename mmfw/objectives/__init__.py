"""Training objectives beyond supervised classification: contrastive alignment and preference (reward) learning.

Building blocks (this package, usable on their own and tested against their formulas):

- :mod:`mmfw.objectives.contrastive`: ``ProjectionHeads``, ``ContrastiveLoss`` (symmetric InfoNCE or sigmoid, with a
  learnable clamped temperature), ``gather_with_grad`` (DDP: negatives span the global batch), ``RetrievalMetrics``
  (recall@k both ways, median rank; accumulated over a split, gathered across ranks).
- :mod:`mmfw.objectives.preference`: ``bradley_terry_loss`` (optional margin, soft ties), ``PreferenceMetrics``
  (pairwise accuracy, AUROC of reward differences, ECE of ``σ(r_a - r_b)``), ``pairs_from_ratings`` and
  ``read_pairs`` (a pairs manifest over a sample manifest).

How they plug into training (the design the wiring follows once the task contract owns loss and metrics):

- ``conf/objective/{classify,contrastive,preference}.yaml`` is a config group selected with ``objective=<name>``;
  each file has a ``_target_`` to one Objective class (``mmfw/objectives/<name>.py``), built in ``mmfw.train.build``
  after the encoders: ``objective(in_dims={m: encoder.out_dim}, modalities=..., task=datamodule.task)``. The
  Objective owns everything that differs between objectives and nothing else:
  ``heads`` (nn.Module: the classifier head, the projection heads, or the scalar reward head over the fusion),
  ``step(module, batch, mask) -> (loss, outputs)`` and ``metrics(prefix, postfix) -> Metric | MetricCollection``,
  ``update(metrics, outputs)``, and the names it can monitor (``val/acc``; ``val/recall@1``; ``val/pair_acc``).
- :class:`mmfw.module.MultimodalModule` keeps the loop it has (steps, epoch-end synchronisation, the best value,
  modality dropout, the per-modality ablation ``test/<metric>[-image]``, NaN guard, optimiser) and calls the
  Objective where it now calls ``loss_fn``/``build_metrics``: encoders and fusion stay the module's, so datamodules,
  loggers, sweeps, resume, compare and eval work unchanged. ``classify`` is today's behaviour (the TaskSpec's loss
  and metrics) and stays the default, so existing configs and checkpoints are unaffected.
- ``contrastive`` uses the encoders but not the fusion (``fusion`` is ignored, not built); the datamodule's paired
  modalities are the positives. Zero-shot classification (class prototypes: mean other-modality embedding per
  class) and the linear probe are evaluation callbacks on the aligned encoders; ``encoder.<m>.init_from=<run
  folder>`` loads a run's encoder weights into a new (e.g. classify) run.
- ``preference`` needs pairs: a pair datamodule wraps a sample datamodule (any ``ManifestDataModule``) and yields
  ``{"chosen": batch, "rejected": batch, "target", "margin"}``; the reward is ``head(fusion(encoders(x)))`` with
  ``out_features=1``, so missing modalities and the modality ablation work as for classification.
  ``mmfw-predict``/eval score single samples with the same forward.
"""

from mmfw.objectives.contrastive import ContrastiveLoss, ProjectionHeads, RetrievalMetrics, gather_with_grad
from mmfw.objectives.preference import (
    PairsError,
    PreferenceMetrics,
    bradley_terry_loss,
    pairs_from_ratings,
    read_pairs,
)

__all__ = [
    "ContrastiveLoss",
    "PairsError",
    "PreferenceMetrics",
    "ProjectionHeads",
    "RetrievalMetrics",
    "bradley_terry_loss",
    "gather_with_grad",
    "pairs_from_ratings",
    "read_pairs",
]
