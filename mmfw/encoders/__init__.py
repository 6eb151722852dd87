"""Encoders: ``nn.Module`` with ``out_dim``; ``forward(x) -> (B, out_dim)`` (or tokens ``(B, T, out_dim)``)."""

from mmfw.encoders.lenet import LeNetEncoder
from mmfw.encoders.ngram_text import NgramTextEncoder
from mmfw.encoders.recurrent import RecurrentEncoder
from mmfw.encoders.tabular import TabularMLPEncoder
from mmfw.encoders.text import HFTextEncoder, TextTransformerEncoder
from mmfw.encoders.timm_backbone import TimmEncoder

__all__ = [
    "HFTextEncoder",
    "LeNetEncoder",
    "NgramTextEncoder",
    "RecurrentEncoder",
    "TabularMLPEncoder",
    "TextTransformerEncoder",
    "TimmEncoder",
]
