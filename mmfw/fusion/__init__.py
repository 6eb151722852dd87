"""Fusion methods: ``XFusion(in_dims, **hparams)`` with ``out_dim`` and ``forward(features, mask) -> (B, out_dim)``.

Configs live in ``conf/fusion/<method>.yaml``; Hydra ``_target_`` points at the classes re-exported here.
``outputs_logits`` (class attribute) is True only for late fusion, which is its own head (the module passes it
``num_outputs``, :func:`mmfw.fusion.factory.build_fusion`). Every method takes ``(B, D)`` vectors or ``(B, T, D)``
tokens: attention and cross-attention attend over the tokens (a vector is one token), the others mean-pool over ``T``.
"""

from mmfw.fusion.attention import AttentionFusion
from mmfw.fusion.bilinear import BilinearFusion
from mmfw.fusion.concat import ConcatFusion
from mmfw.fusion.cross_attention import CrossAttentionFusion
from mmfw.fusion.film import FiLMFusion
from mmfw.fusion.gated import GatedFusion
from mmfw.fusion.late import LateFusion
from mmfw.fusion.lowrank import LowRankFusion
from mmfw.fusion.pool import PoolFusion
from mmfw.fusion.tensor import TensorFusion

__all__ = [
    "AttentionFusion",
    "BilinearFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "FiLMFusion",
    "GatedFusion",
    "LateFusion",
    "LowRankFusion",
    "PoolFusion",
    "TensorFusion",
]
