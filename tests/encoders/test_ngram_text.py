"""The n-gram bag encoder and its tokenizer: the pooling formula, padding, the hashed n-grams and their cut."""

from __future__ import annotations

import zlib

import pytest
import torch

from mmfw.data.text import NgramTokenizer, tokenize_padded
from mmfw.encoders import NgramTextEncoder


def test_ngrams_are_word_1_2_grams_then_char_2_5_grams_of_each_padded_word():
    grams = NgramTokenizer(buckets=97).ngrams("Hi, yo")
    words = ["whi", "wyo", "whi yo"]
    chars_hi = ["c h", "chi", "ci,", "c, ", "c hi", "chi,", "ci, ", "c hi,", "chi, ", "c hi, "]
    chars_yo = ["c y", "cyo", "co ", "c yo", "cyo ", "c yo "]
    assert grams == words + chars_hi + chars_yo


def ngram_id(gram: str, buckets: int) -> int:
    """Word n-grams (``w...``) hash into ``1..buckets // 2``, character n-grams into the ids above."""
    words = buckets // 2
    h = zlib.crc32(gram.encode())
    return h % words + 1 if gram[0] == "w" else words + 1 + h % (buckets - words)


def test_split_kinds_put_word_ngram_ids_below_char_ngram_ids():
    tok = NgramTokenizer(buckets=97, unique=False, split_kinds=True)
    ids, cut = tok.encode_with_truncation("Hi, yo", 1000)
    assert ids == [ngram_id(g, 97) for g in tok.ngrams("Hi, yo")] and not cut
    assert tok.word_buckets == 48 and max(ids[:3]) <= 48 < min(ids[3:])  # 3 word n-grams, then character ones
    assert tok.fingerprint != NgramTokenizer(buckets=97, unique=False).fingerprint  # cached ids are not reused


def test_ngram_ids_are_fixed_crc32_buckets_and_the_cut_is_counted():
    """The default ids are the ones runs were trained with before split_kinds existed: they must not change."""
    tok = NgramTokenizer(buckets=97, unique=False)
    ids, cut = tok.encode_with_truncation("Hi, yo", 1000)
    assert ids == [zlib.crc32(g.encode()) % 97 + 1 for g in tok.ngrams("Hi, yo")] and not cut
    assert min(ids) >= 1 and max(ids) <= 97 and tok.vocab_size == 98 and tok.pad_id == 0 and tok.word_buckets is None
    short, cut = tok.encode_with_truncation("Hi, yo", 5)
    assert cut and len(short) <= 5
    ids, truncated = tokenize_padded(tok, ["Hi, yo", "", "a b c d e f g h"], 10)
    # a bag is padded to the longest text (at most the cap), not to the cap
    assert ids.shape == (3, 10) and (ids[1] == 0).all() and truncated.tolist() == [True, False, True]
    ids, truncated = tokenize_padded(tok, ["Hi", "a"], 1000)
    assert ids.shape == (2, len(tok.ngrams("Hi"))) and not truncated.any()


def test_a_unique_bag_keeps_each_id_once_in_first_occurrence_order():
    text = "no no no way"
    counted = NgramTokenizer(buckets=1 << 20, unique=False).encode(text, 1000)
    unique = NgramTokenizer(buckets=1 << 20, unique=True).encode(text, 1000)
    assert unique == list(dict.fromkeys(counted)) and len(unique) < len(counted)


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_bag_pools_the_embeddings_of_the_non_padding_ids(pooling):
    torch.manual_seed(0)
    enc = NgramTextEncoder(50, pad_id=0, dim=8, pooling=pooling, lr_scale=3.0)
    ids = torch.tensor([[3, 7, 7, 0, 0], [0, 0, 0, 0, 0], [49, 1, 2, 3, 4]])
    table = 3.0 * enc.bag.weight.detach()  # E = lr_scale * E'
    assert table.abs().max() <= 1 / 8  # fastText's init of E: uniform(-1/dim, 1/dim)
    rows = [[3, 7, 7], [], [49, 1, 2, 3, 4]]
    expected = torch.stack([
        table[r].mean(0) if pooling == "mean" and r else table[r].sum(0) if r else torch.zeros(8) for r in rows
    ])  # fmt: skip
    out = enc(ids)
    assert out.shape == (3, 8) and enc.out_dim == 8
    torch.testing.assert_close(out, expected)
    with torch.no_grad():
        enc.bag.weight[0].fill_(5.0)  # the padding row is never read
    torch.testing.assert_close(enc(torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)), expected)


def test_bag_with_a_hidden_layer_and_gradients():
    enc = NgramTextEncoder(30, dim=4, hidden_dim=6, dropout=0.0)
    out = enc(torch.tensor([[1, 2, 0], [5, 0, 0]]))
    assert out.shape == (2, 6) and enc.out_dim == 6
    out.sum().backward()
    grad = enc.bag.weight.grad
    assert grad[[1, 2, 5]].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[3].abs().sum() == 0


def test_idf_weighted_l2_bag_with_identity_rows_is_tfidf_and_min_df_drops_single_text_ngrams():
    """With E = I the l2-pooled, IDF-weighted bag is scikit-learn's TF-IDF row (binary tf, smoothed idf, l2 norm)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mmfw.data.text import ngram_document_frequencies

    texts = ["good drug", "bad drug", "good good effect", "no effect at all"]
    vocab = sorted({w for t in texts for w in t.split()})
    ids = torch.zeros(len(texts), 4, dtype=torch.long)  # bucket = 1 + the word's index, 0 pads
    for i, t in enumerate(texts):
        row = list(dict.fromkeys(vocab.index(w) + 1 for w in t.split()))
        ids[i, : len(row)] = torch.tensor(row)
    tok = NgramTokenizer(buckets=len(vocab))
    stats = ngram_document_frequencies(ids, tok)
    assert stats["num_texts"] == 4 and stats["doc_freq"][vocab.index("drug") + 1] == 2
    assert stats["doc_freq"][vocab.index("good") + 1] == 2  # twice in one text counts once
    enc = NgramTextEncoder(tok.vocab_size, dim=tok.vocab_size, pooling="l2", weighting="idf", **stats)
    with torch.no_grad():
        enc.bag.weight.copy_(torch.eye(tok.vocab_size))
    got = enc(ids)[:, 1:]
    tfidf = TfidfVectorizer(vocabulary=vocab, binary=True, token_pattern=r"\S+").fit(texts).transform(texts)
    assert torch.allclose(got, torch.tensor(tfidf.toarray(), dtype=torch.float32), atol=1e-6)

    pruned = NgramTextEncoder(tok.vocab_size, dim=tok.vocab_size, min_df=2, **stats)
    kept = {vocab[g - 1] for g in range(1, tok.vocab_size) if pruned.bucket_weight[g] > 0}
    assert kept == {"drug", "good", "effect"}  # "bad", "no", "at", "all" occur in one training text
    with torch.no_grad():
        pruned.bag.weight.copy_(torch.eye(tok.vocab_size))
    assert torch.allclose(pruned(ids)[3, 1:].sum(), torch.tensor(1.0))  # "no effect at all": the mean of "effect"


def test_idf_or_min_df_without_document_frequencies_says_what_to_set():
    with pytest.raises(ValueError, match="doc_freq.*weighting=binary min_df=1"):
        NgramTextEncoder(10, weighting="idf")


def test_separate_kinds_pool_word_and_char_ngrams_each_on_its_own_like_the_baselines_two_tfidf_blocks():
    """kinds=separate, IDF + l2: the bag is [word TF-IDF | char_wb TF-IDF] (each block unit length, as the linear
    baseline's FeatureUnion) times the table's rows; kinds=joint normalises all n-grams of a text together."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mmfw.data.text import ngram_document_frequencies

    texts = ["good drug", "bad drug, bad", "good good effect", "no effect at all"]
    buckets = 1 << 16
    tok = NgramTokenizer(buckets=buckets, split_kinds=True)
    ids, _ = tokenize_padded(tok, texts, 1000)
    ids = torch.from_numpy(ids)
    stats = ngram_document_frequencies(ids, tok)
    torch.manual_seed(0)
    kw = dict(dim=8, pooling="l2", weighting="idf", word_buckets=tok.word_buckets, **stats)
    enc = NgramTextEncoder(tok.vocab_size, kinds="separate", **kw)
    table = enc.bag.weight.detach()
    expected = torch.zeros(len(texts), 8)
    for analyzer, prefix, extra in [("word", "w", {"token_pattern": r"\w+"}), ("char_wb", "c", {})]:
        n = (1, 2) if analyzer == "word" else (2, 5)
        vec = TfidfVectorizer(analyzer=analyzer, ngram_range=n, binary=True, **extra).fit(texts)
        rows = torch.stack([table[ngram_id(prefix + g, buckets)] for g in vec.get_feature_names_out()])
        expected += torch.tensor(vec.transform(texts).toarray(), dtype=torch.float32) @ rows
    torch.testing.assert_close(enc(ids), expected)
    joint = NgramTextEncoder(tok.vocab_size, kinds="joint", **kw)
    with torch.no_grad():
        joint.bag.weight.copy_(table)
    assert not torch.allclose(joint(ids), expected, atol=1e-3)
    with pytest.raises(ValueError, match="word_buckets.*datamodule.ngram_split_kinds=true, or kinds=joint"):
        NgramTextEncoder(10, kinds="separate")
