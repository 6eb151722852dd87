"""Training objectives beyond supervised classification: contrastive alignment and preference (reward) learning.

Building blocks (this package, usable on their own and tested against their formulas):

- :mod:`mmfw.objectives.contrastive`: ``ProjectionHeads``, ``ContrastiveLoss`` (symmetric InfoNCE or sigmoid, with a
  learnable clamped temperature), ``gather_with_grad`` (DDP: negatives span the global batch), ``RetrievalMetrics``
  (recall@k both ways, median rank; accumulated over a split, gathered across ranks).
- :mod:`mmfw.objectives.preference`: ``bradley_terry_loss`` (optional margin, soft ties), ``PreferenceMetrics``
  (pairwise accuracy, AUROC of reward differences, ECE of ``σ(r_a - r_b)``), ``pairs_from_ratings`` and
  ``read_pairs`` (a pairs manifest over a sample manifest).

How they plug into training (:mod:`mmfw.objectives.base`):

- ``conf/objective/{classify,contrastive,preference}.yaml`` is a config group selected with ``objective=<name>``;
  each file's ``_target_`` is one Objective class (:class:`~mmfw.objectives.classify.Classify`,
  :class:`~mmfw.objectives.contrastive.Contrastive`, :class:`~mmfw.objectives.preference.Preference`), handed to
  :class:`mmfw.module.MultimodalModule` as a partial by ``mmfw.train.build`` and built there as
  ``objective(task=..., in_dims={m: encoder.out_dim})``. It owns the loss and outputs of a step
  (``loss_and_outputs``), the metrics of a split (``metrics``, updated as ``update(outputs, target)``), the width of
  the head over the fusion (``head_outputs``; None: no fusion or head) and what ``monitor.metric=auto`` monitors.
- The module keeps its loop (steps, epoch-end synchronisation, the best value, modality dropout, the ablation
  ``test/<metric>[-image]``, NaN guard, optimiser); ``classify`` is the default and adds no parameter, so existing
  configs and checkpoints are unaffected.
- ``contrastive`` uses the encoders but not the fusion; the datamodule's paired modalities are the positives;
  zero-shot prototypes are computed at the start of the test. ``encoder.<m>.init_from=<run folder>``
  (:mod:`mmfw.objectives.transfer`) starts a new run's encoder from an aligned one (fine-tune, or linear probe with
  ``frozen=true``).
- ``preference``: the objective's ``pairs`` node wraps the sample datamodule into a
  :class:`~mmfw.objectives.pairs.PairDataModule` whose batches are the chosen then the rejected samples; the reward
  is ``head(fusion(encoders(x)))`` with one output, so missing modalities and the ablation work as for classification.
"""

from mmfw.objectives.contrastive import ContrastiveLoss, ProjectionHeads, gather_with_grad
from mmfw.objectives.preference import (
    PairsError,
    PreferenceMetrics,
    bradley_terry_loss,
    pairs_from_ratings,
    read_pairs,
)
from mmfw.objectives.retrieval import RetrievalMetrics

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
