"""Self-attention fusion: a Transformer encoder (Vaswani et al., 2017) over ``[CLS; W_m x_m + e_m]`` for all
modality tokens, ``h = LN(Encoder(...)[CLS])`` (the multimodal-token recipe of e.g. VATT, Akbari et al., 2021).

A missing modality's tokens are key-padded (no query attends to them), so ``h`` is what the encoder would compute
without them; with every modality missing only the CLS token is attended and the output is still finite.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfw.fusion._common import as_tokens, check_inputs, zero_missing


class AttentionFusion(nn.Module):
    """Transformer encoder over modality tokens plus a learned CLS token; the output is the CLS token.

    Accepts one vector ``(B, D_m)`` (one token) or a token sequence ``(B, T_m, D_m)`` per modality; ``T_m`` may differ
    between modalities. Each modality is projected to ``d_model`` and gets a learned modality embedding; no positional
    embedding is added inside a sequence (token encoders are expected to carry their own).

    Args:
        in_dims: feature width per modality; its order is the mask's column order.
        d_model: token width and output width.
        num_heads: attention heads (must divide ``d_model``).
        num_layers: encoder layers.
        dim_feedforward: hidden width of each layer's feed-forward block.
        dropout: dropout inside the encoder layers.

    Shapes:
        features: ``{m: (B, D_m) or (B, T_m, D_m)}``; mask: bool ``(B, M)``; output: ``(B, d_model)``.
    """

    outputs_logits = False

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"fusion.d_model={d_model} must be divisible by fusion.num_heads={num_heads}")
        self.names = list(in_dims)
        self.out_dim = d_model
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in in_dims.items()})
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(len(in_dims), d_model))
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # pre-norm layers need a final norm; nested tensors are off because they do not support pre-norm layers
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)

    def tokens(self, features: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder input ``(B, 1 + Σ T_m, d_model)`` and its key-padding mask (True = ignore), CLS first."""
        check_inputs(self.names, features, mask)
        batch = mask.shape[0]
        tokens = [self.cls_token.expand(batch, -1, -1)]
        padding = [torch.zeros(batch, 1, dtype=torch.bool, device=mask.device)]
        for j, m in enumerate(self.names):
            x = zero_missing(as_tokens(features[m]), mask[:, j])  # (B, T_m, D_m)
            tokens.append(self.proj[m](x) + self.modality_embedding[j])
            padding.append((~mask[:, j : j + 1]).expand(-1, x.shape[1]))
        return torch.cat(tokens, dim=1), torch.cat(padding, dim=1)

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        x, padding = self.tokens(features, mask)
        return self.encoder(x, src_key_padding_mask=padding)[:, 0]  # (B, d_model)
