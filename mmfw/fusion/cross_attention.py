"""Directional cross-modal attention (MulT, Tsai et al., 2019, arXiv:1906.00295): for each ordered pair ``s → t``,
from ``Z = X_t``: ``Z ← Z + CM(LN(Z), LN(X_s))``, ``Z ← Z + FF(LN(Z))``; ``h = MLP([pool(Z_{s→t}) for all pairs])``.

A missing source skips the cross-attention update (the target stream passes through its feed-forward only); a missing
target zeroes its streams. With M = 1 the single stream attends to itself (plain self-attention).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_tokens, check_inputs, zero_missing


class CrossModalBlock(nn.Module):
    """One MulT cross-modal layer: target tokens ``(B, T_t, d)`` attend to source tokens ``(B, T_s, d)``."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: Tensor, x: Tensor, source_present: Tensor) -> Tensor:
        kv = self.norm_kv(x)
        a, _ = self.attn(self.norm_q(z), kv, kv, need_weights=False)
        z = z + zero_missing(self.dropout(a), source_present)
        return z + self.dropout(self.ff(self.norm_ff(z)))


class CrossAttentionFusion(nn.Module):
    """MulT-style fusion: ``M (M - 1)`` directional cross-modal streams, mean-pooled over target tokens, concatenated.

    Accepts one vector ``(B, D_m)`` (one token) or a token sequence ``(B, T_m, D_m)`` per modality; ``T_m`` may differ.
    Each modality is projected to ``d_model`` (MulT uses a 1-D convolution; no positional embedding is added).

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        d_model: width of every stream.
        num_heads: attention heads (must divide ``d_model``).
        num_layers: cross-modal layers per stream.
        dim_feedforward: hidden width of each layer's feed-forward block.
        out_dim: width of the output MLP.
        dropout: dropout inside the layers and after the output MLP.

    Shapes:
        features: ``{m: (B, D_m) or (B, T_m, D_m)}``; mask: bool ``(B, M)``; output: ``(B, out_dim)``.
    """

    outputs_logits = False

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 1,
        dim_feedforward: int = 128,
        out_dim: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"fusion.d_model={d_model} must be divisible by fusion.num_heads={num_heads}")
        self.names = list(in_dims)
        self.out_dim = out_dim
        self.pairs = [(s, t) for t in self.names for s in self.names if s != t] or [(self.names[0], self.names[0])]
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in in_dims.items()})
        self.streams = nn.ModuleList(
            nn.ModuleList(CrossModalBlock(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_layers))
            for _ in self.pairs
        )
        self.out = nn.Sequential(nn.Linear(len(self.pairs) * d_model, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        check_inputs(self.names, features, mask)
        col = {m: j for j, m in enumerate(self.names)}
        x = {m: self.proj[m](zero_missing(as_tokens(features[m]), mask[:, j])) for j, m in enumerate(self.names)}
        pooled = []
        for (s, t), blocks in zip(self.pairs, self.streams):
            z = x[t]  # (B, T_t, d_model)
            for block in blocks:
                z = block(z, x[s], mask[:, col[s]])
            pooled.append(zero_missing(z.mean(dim=1), mask[:, col[t]]))  # (B, d_model)
        return self.out(torch.cat(pooled, dim=-1))
