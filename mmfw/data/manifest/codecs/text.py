"""Text columns: a string per cell, tokenized by the configured tokenizer (``text_tokenizer``: ngrams, bytes, a BPE
trained on the training split's texts of every text column, or a pretrained model's) to ids ``(L,)``, right-padded.
Texts cut to the tokenizer's length are counted per modality. Decoded again under a text corruption (robustness)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mmfw.data.manifest.codecs.base import ColumnCodec
from mmfw.data.manifest.reader import is_missing
from mmfw.data.text import (
    ByteTokenizer,
    HFTokenizer,
    NgramTokenizer,
    build_text_tokenizer,
    encode_padded,
    ngram_document_frequencies,
    tokenize_padded,
    tokenizer_spec_fingerprint,
)


class Codec(ColumnCodec):
    kind = "text"
    redecodes = True
    tokenizer: ByteTokenizer | HFTokenizer | NgramTokenizer | None = None
    document_frequencies: dict[str, dict[str, Any]] | None = None

    def cache_key(self, records: Sequence[dict[str, Any]]) -> str:
        return tokenizer_spec_fingerprint(self.settings.text_tokenizer)

    def decode_cell(self, value: Any, column: str) -> str:
        return str(value)

    def fit(self, values: dict[str, list[Any]], train: Sequence[int]) -> None:
        """One tokenizer for every text column (a BPE learns from all their training texts, column by column)."""
        texts = [values[m][i] for m in self.specs for i in train]
        self.tokenizer = self._build_tokenizer([t for t in texts if t is not None])
        s = self.settings
        self.document_frequencies = {}
        if isinstance(self.tokenizer, NgramTokenizer):  # the n-gram bag's IDF / min_df (encoders.ngram_text)
            for m in self.specs:
                train_texts = [values[m][i] for i in train if values[m][i] is not None]
                ids, _ = tokenize_padded(self.tokenizer, train_texts, s.text_len)
                counts = ngram_document_frequencies(ids, self.tokenizer)
                # A tensor: the datamodule cache is read back with weights_only=True, which refuses numpy arrays.
                self.document_frequencies[m] = {**counts, "doc_freq": torch.from_numpy(counts["doc_freq"])}

    def state(self) -> str | None:
        """Only a trained BPE needs saving; the others are rebuilt from the spec (the cache key covers their files)."""
        return self.tokenizer.to_str() if self.settings.text_tokenizer == "bpe" else None

    def restore(self, state: str | None) -> None:
        if self.settings.text_tokenizer == "bpe":
            from tokenizers import Tokenizer

            source = "bpe trained on the training split"
            self.tokenizer = HFTokenizer(Tokenizer.from_str(state), pad_token="[PAD]", source=source)
        else:  # rebuilt from the settings (an hf: tokenizer: the cache key holds a digest of its files)
            self.tokenizer = self._build_tokenizer([])

    def _build_tokenizer(self, train_texts: list[str]) -> ByteTokenizer | HFTokenizer | NgramTokenizer:
        """The settings' tokenizer; a ``bpe`` is trained on ``train_texts`` (training split only)."""
        s = self.settings
        return build_text_tokenizer(s.text_tokenizer, train_texts, bpe_vocab_size=s.bpe_vocab_size, max_len=s.text_len,
                                    ngram_buckets=s.ngram_buckets, ngram_unique=s.ngram_unique,
                                    ngram_split_kinds=s.ngram_split_kinds)  # fmt: skip

    def assemble(self, modality: str, column: list[Any]) -> tuple[torch.Tensor, dict[str, int]]:
        present = np.array([v is not None for v in column], dtype=bool)
        ids, cut = tokenize_padded(self.tokenizer, [v or "" for v in column], self.settings.text_len)
        ids[~present] = self.tokenizer.pad_id  # a missing text is all padding
        return torch.from_numpy(ids), {"truncated": int(cut[present].sum()), "texts": int(present.sum())}

    def encoder_inputs(self, modality: str) -> dict[str, Any]:
        inputs = {"vocab_size": self.tokenizer.vocab_size, "pad_id": self.tokenizer.pad_id}
        if isinstance(self.tokenizer, NgramTokenizer) and self.tokenizer.word_buckets is not None:  # ngram_text
            inputs["word_buckets"] = self.tokenizer.word_buckets
        return {**inputs, **(self.document_frequencies or {}).get(modality, {})}

    def redecode(
        self, modality: str, cells: list[Any], present: torch.Tensor, like: Any, corrupt: Callable[..., Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``corrupt(text, *, index) -> text`` before tokenizing; a text left blank is missing (mask bit False)."""
        texts = [corrupt(str(v), index=i) if present[i] else "" for i, v in enumerate(cells)]
        present = present & torch.tensor([not is_missing(t) for t in texts], dtype=torch.bool)
        ids = encode_padded(self.tokenizer, texts, self.settings.text_len)
        ids[~present.numpy()] = self.tokenizer.pad_id
        return torch.from_numpy(ids), present
