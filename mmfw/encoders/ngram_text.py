"""A bag of hashed n-grams → one vector (fastText, Joulin et al. 2017): fast, strong on short supervised texts.

Input ``ids (B, L)`` long from ``text_tokenizer=ngrams`` (:class:`mmfw.data.text.NgramTokenizer`): each row the
bucket ids ``g_1..g_n`` of a text's word 1-2-grams and character 2-5-grams, right-padded with ``pad_id`` (never
read). With ``E = lr_scale * E'`` the ``(vocab_size, dim)`` embedding table (``E'`` the stored parameter) and
``w_g`` a weight per bucket (below)::

    mean pooling:   v = Σ_k w[g_k] E[g_k] / Σ_k w[g_k]                               (B, dim)
    l2 pooling:     v = Σ_k w[g_k] E[g_k] / sqrt(Σ_k w[g_k]²)    (TF-IDF's unit-length rows)
    sum pooling:    v = Σ_k w[g_k] E[g_k]
    out = v                                       when hidden_dim is None                 (B, dim)
    out = Dropout(GELU(W v + b))                  else, W (hidden_dim, dim)               (B, hidden_dim)

and ``Dropout(v)`` first when ``dropout > 0``. With ``kinds: separate`` the word n-grams (ids ``1..word_buckets``,
from the datamodule with ``ngram_split_kinds: true``) and the character n-grams (the ids above) are pooled each on
its own and the two summed, ``v = pool(word n-grams) + pool(character n-grams)`` (one bag, each weight divided by its
own group's norm): the linear baseline's two TF-IDF blocks, each of unit length, times the table. With ``kinds: joint``
one norm covers both, and since a text has several times more character n-grams than word n-grams the word n-grams,
which carry most of the signal on the drug reviews, are diluted (text-only val AUROC 0.800 joint vs 0.818 separate).

The weights come from the training split's document frequencies
``df_g`` (``doc_freq``, handed over by the datamodule with ``num_texts`` = N): ``w_g = 0`` when ``df_g < min_df``,
else ``idf_g = ln((1 + N) / (1 + df_g)) + 1`` (``weighting: idf``, scikit-learn's smoothed IDF) or 1
(``weighting: binary``). Like the baseline's TF-IDF ``min_df``, ``min_df: 2`` leaves out the n-grams of a single
training text: on a few hundred reviews most character 5-grams and word bigrams are such, and their rows can only
memorise that text. The datamodule's ``ngram_unique`` (default) lists each distinct n-gram of a text once, so the
term frequency is binary (TF-IDF's sublinear term frequency is close to it: on the drug reviews text-only test AUROC
0.817 vs 0.796 with counts, seed 0); with ``ngram_unique: false`` a repeated n-gram counts as often as it occurs. A
row with no weighted ids (a missing or empty text) is zeros; the modality mask tells the fusion to ignore it. Order
is not read: with the fusion's MLP on top this is a shallow non-linear model of the same features a TF-IDF +
logistic-regression baseline uses.

Why ``lr_scale``: an Adam step moves each parameter by about the learning rate, whatever its gradient's size, so
``E = lr_scale * E'`` makes the table learn ``lr_scale`` times faster than the rest of the model under one
optimizer. A row is updated only by the texts holding its n-gram (most rows by a handful of texts per epoch), so
the table needs a far higher rate (fastText trains it with ~0.1-1) than the fusion and the other encoders; one
global rate high enough for it makes the rest diverge (val loss doubling after 3 epochs on the drug reviews).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class NgramTextEncoder(nn.Module):
    """Embedding bag over hashed n-gram ids (see the module docstring for the formula).

    Args:
        vocab_size: hash buckets + 1 (padding); filled in from the datamodule (``encoder_inputs``).
        pad_id: the padding id, left out of every bag; filled in from the datamodule.
        dim: embedding width.
        pooling: ``mean`` (length-normalised, the default: long and short texts on one scale) or ``sum``.
        hidden_dim: width of an optional GELU layer after pooling; None hands the pooled bag to the fusion.
        dropout: dropout on the pooled bag (and after the hidden layer).
        lr_scale: the table learns this many times faster than the rest of the model (see the module docstring).
        doc_freq: ``(vocab_size,)`` training texts holding each bucket; from the datamodule. None: every bucket
            weighs 1 (``weighting`` and ``min_df`` need it).
        num_texts: training texts ``N`` that ``doc_freq`` counts; from the datamodule.
        weighting: ``idf`` or ``binary`` (see the module docstring).
        min_df: buckets of fewer training texts weigh 0.
        word_buckets: ids ``1..word_buckets`` are word n-grams, the ids above character n-grams; from the
            datamodule. Needed by ``kinds: separate``.
        kinds: ``joint`` (one bag) or ``separate`` (word and character n-grams pooled each on its own, then summed).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        pad_id: int = 0,
        dim: int = 64,
        pooling: Literal["mean", "l2", "sum"] = "mean",
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        lr_scale: float = 1.0,
        doc_freq: torch.Tensor | None = None,
        num_texts: int | None = None,
        weighting: Literal["idf", "binary"] = "binary",
        min_df: int = 1,
        word_buckets: int | None = None,
        kinds: Literal["joint", "separate"] = "joint",
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "l2", "sum"):
            raise ValueError(f"encoder.<text>.pooling must be 'mean', 'l2' or 'sum', got {pooling!r}")
        if weighting not in ("idf", "binary"):
            raise ValueError(f"encoder.<text>.weighting must be 'idf' or 'binary', got {weighting!r}")
        if lr_scale <= 0:
            raise ValueError(f"lr_scale must be positive, got {lr_scale}")
        if doc_freq is None and (weighting == "idf" or min_df > 1):
            raise ValueError(
                f"encoder.<text>.weighting={weighting} / min_df={min_df} need the training split's document "
                "frequencies (doc_freq, num_texts), which the manifest datamodule hands over with "
                "text_tokenizer=ngrams; set weighting=binary min_df=1 for another datamodule"
            )
        if kinds not in ("joint", "separate"):
            raise ValueError(f"encoder.<text>.kinds must be 'joint' or 'separate', got {kinds!r}")
        if kinds == "separate" and word_buckets is None:
            raise ValueError(
                "encoder.<text>.kinds=separate needs word_buckets (which ids are word n-grams), which the manifest "
                "datamodule hands over with text_tokenizer=ngrams and ngram_split_kinds=true: set "
                "datamodule.ngram_split_kinds=true, or kinds=joint"
            )
        self.pad_id, self.lr_scale, self.pooling = pad_id, float(lr_scale), pooling
        self.word_buckets = word_buckets if kinds == "separate" else None
        # The per-bucket weights are data (they come with the training split), kept with the weights in checkpoints.
        weights = bucket_weights(vocab_size, doc_freq, num_texts, weighting, min_df, pad_id)
        self.register_buffer("bucket_weight", weights)
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="sum", padding_idx=pad_id)
        # fastText's initialisation of E: small uniform rows, so that a bag of thousands of n-grams starts near zero.
        nn.init.uniform_(self.bag.weight, -1.0 / (dim * self.lr_scale), 1.0 / (dim * self.lr_scale))
        with torch.no_grad():
            self.bag.weight[pad_id].zero_()
        self.drop = nn.Dropout(dropout)
        self.hidden = None
        if hidden_dim is not None:
            self.hidden = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = int(hidden_dim if hidden_dim is not None else dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) long → (B, out_dim)."""
        w = self.bucket_weight[ids]  # (B, L); 0 for padding and for n-grams below min_df
        if self.pooling != "sum":
            groups = [torch.ones_like(w, dtype=torch.bool)]
            if self.word_buckets is not None:
                word = ids <= self.word_buckets
                groups = [word, ~word]
            scale = torch.zeros_like(w)
            for group in groups:
                wg = w * group
                norm = wg.sum(dim=1) if self.pooling == "mean" else wg.square().sum(dim=1).sqrt()
                # a text without weighted n-grams (in this group) stays 0
                scale = scale + group / norm.clamp_min(1e-12).unsqueeze(1)
            w = w * scale
        v = self.bag(ids, per_sample_weights=w)  # (B, dim)
        v = self.drop(self.lr_scale * v)
        return self.hidden(v) if self.hidden is not None else v


def bucket_weights(
    vocab_size: int, doc_freq: torch.Tensor | None, num_texts: int | None, weighting: str, min_df: int, pad_id: int
) -> torch.Tensor:
    """``(vocab_size,)`` float: the weight ``w_g`` of each bucket (see the module docstring); 0 for ``pad_id``."""
    if doc_freq is None:
        weights = torch.ones(vocab_size)
    else:
        df = torch.as_tensor(doc_freq, dtype=torch.float32)
        if df.shape != (vocab_size,):
            raise ValueError(f"doc_freq must have vocab_size={vocab_size} entries, got shape {tuple(df.shape)}")
        n = float(num_texts if num_texts is not None else df.max())
        weights = torch.log((1 + n) / (1 + df)) + 1 if weighting == "idf" else torch.ones(vocab_size)
        weights = torch.where(df >= min_df, weights, torch.zeros_like(weights))
    weights[pad_id] = 0.0
    return weights
