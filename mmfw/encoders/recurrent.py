"""LSTM / GRU over a sequence (Hochreiter & Schmidhuber 1997; Cho et al. 2014): text token ids or spectrogram frames.

Text: ``ids (B, L)`` right-padded with ``pad_id`` → ``x_t = E[ids_t]``. Audio: a log-mel spectrogram
``(B, C, n_mels, T)`` read as ``T`` frames ``x_t = spec[:, :, :, t]`` flattened to ``C · n_mels`` values. Step ``t``
of row ``b`` is valid when ``t < n_b``, the row's length: one past its last non-padding token, or past its last
frame that is not entirely ``pad_value`` (every frame when ``pad_value`` is None). The sequences are packed, so the
recurrence never reads padding (the backward direction starts at step ``n_b - 1``), and with ``h_t`` the top
layer's output (both directions concatenated)::

    mean pooling:  v = Σ_{t<n} h_t / n                 last pooling:  v = [h→_{n-1}; h←_0]      (B, out_dim)
    returns_tokens: (h_t · 1[t < n])_t                                                          (B, T, out_dim)

A row with ``n = 0`` (a missing text) is zeros; the modality mask tells the fusion to ignore it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Cell = Literal["lstm", "gru"]
Pooling = Literal["mean", "last"]


def valid_lengths(valid: torch.Tensor) -> torch.Tensor:
    """valid (B, T) bool → (B,) long: one past the last valid step (0 for a row with none)."""
    steps = torch.arange(1, valid.shape[1] + 1, device=valid.device)
    return (valid * steps).amax(dim=1)


class RecurrentEncoder(nn.Module):
    """A (bi)directional LSTM or GRU over token ids (give ``vocab_size``) or spectrogram frames (give ``n_mels``).

    Args:
        cell: ``lstm`` or ``gru``.
        hidden_dim: hidden units per direction; ``out_dim = hidden_dim * (2 if bidirectional else 1)``.
        num_layers: stacked recurrent layers.
        bidirectional: also run the sequence backwards and concatenate both directions.
        dropout: dropout on the inputs and between layers.
        pooling: ``mean`` (masked mean over valid steps) or ``last`` (final state of each direction).
        returns_tokens: return ``(B, T, out_dim)`` (padded steps zero) instead of pooling.
        vocab_size: text: the tokenizer's vocabulary; filled in from the datamodule (``encoder_inputs``).
        pad_id: text: the padding id; filled in from the datamodule.
        embed_dim: text: width of the token embedding.
        n_mels: audio: mel bands of the spectrogram (``${datamodule.n_mels}`` in the configs).
        in_chans: audio: spectrogram channels; filled in from the datamodule.
        pad_value: audio: the value the datamodule pads a short recording's frames with; trailing frames that hold
            only this value are padding. None: every frame is valid (AV-digits: normalised, nothing padded).
    """

    def __init__(
        self,
        *,
        cell: Cell = "lstm",
        hidden_dim: int = 64,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        pooling: Pooling = "mean",
        returns_tokens: bool = False,
        vocab_size: int | None = None,
        pad_id: int = 0,
        embed_dim: int = 64,
        n_mels: int | None = None,
        in_chans: int = 1,
        pad_value: float | None = None,
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"encoder cell must be 'lstm' or 'gru', got {cell!r}")
        if pooling not in ("mean", "last"):
            raise ValueError(f"encoder pooling must be 'mean' or 'last', got {pooling!r}")
        if (vocab_size is None) == (n_mels is None):
            raise ValueError(
                "RecurrentEncoder reads either token ids (vocab_size, from a text datamodule) or spectrogram frames "
                f"(n_mels, e.g. n_mels: ${{datamodule.n_mels}}); got vocab_size={vocab_size}, n_mels={n_mels}"
            )
        self.pad_id, self.pad_value, self.pooling, self.returns_tokens = pad_id, pad_value, pooling, returns_tokens
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id) if vocab_size is not None else None
        input_size = embed_dim if vocab_size is not None else in_chans * int(n_mels)
        self.drop = nn.Dropout(dropout)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            input_size, hidden_dim, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )  # fmt: skip
        self.directions = 2 if bidirectional else 1
        self.out_dim = hidden_dim * self.directions

    def sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input as steps ``(B, T, input_size)`` and their validity ``(B, T)`` bool."""
        if self.embed is not None:
            if x.dim() != 2 or x.is_floating_point():
                raise ValueError(f"this text encoder reads token ids (B, L) long, got {tuple(x.shape)} {x.dtype}")
            return self.embed(x), x != self.pad_id
        if x.dim() != 4:
            raise ValueError(f"this audio encoder reads spectrograms (B, C, n_mels, T), got shape {tuple(x.shape)}")
        steps = x.flatten(1, 2).transpose(1, 2)  # (B, T, C * n_mels)
        if self.pad_value is None:
            return steps, torch.ones(steps.shape[:2], dtype=torch.bool, device=x.device)
        return steps, (steps != self.pad_value).any(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ids (B, L) or spectrogram (B, C, n_mels, T) → (B, out_dim), or (B, T, out_dim) when ``returns_tokens``."""
        steps, valid = self.sequence(x)
        if self.embed is None and self.pad_value is None:
            # Every frame is valid: the packed run below computes the same, slower, and torch.export (mmfw-export
            # to ONNX) cannot trace packing.
            hidden, state = self.rnn(self.drop(steps))
            return self.pool(hidden, state, torch.full(steps.shape[:1], steps.shape[1], device=x.device))
        lengths = valid_lengths(valid)  # (B,)
        # An empty row runs one (padding) step and is zeroed below: packing cannot hold empty sequences.
        packed = pack_padded_sequence(
            self.drop(steps), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, state = self.rnn(packed)
        hidden, _ = pad_packed_sequence(out, batch_first=True, total_length=steps.shape[1])  # 0 past n_b
        return self.pool(hidden, state, lengths)

    def pool(self, hidden: torch.Tensor, state: torch.Tensor | tuple, lengths: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, out_dim) zero past each row's length, the final state, lengths (B,) → the encoder output."""
        present = (lengths > 0).unsqueeze(-1).to(hidden.dtype)  # (B, 1)
        if self.returns_tokens:
            return hidden * present.unsqueeze(-1)
        if self.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (layers * directions, B, hidden_dim)
            pooled = torch.cat(list(h_n[-self.directions :]), dim=-1)  # (B, out_dim)
        else:
            pooled = hidden.sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(hidden.dtype)
        return pooled * present
