"""TabularMLPEncoder: shapes, no NaN, the unknown-category bucket, missing indicators."""

from __future__ import annotations

import pytest
import torch

from mmfw.encoders.tabular import TabularMLPEncoder


def row_batch(b: int = 4) -> dict[str, torch.Tensor]:
    return {
        "numeric": torch.randn(b, 3),
        "numeric_missing": torch.zeros(b, 3, dtype=torch.bool),
        "categorical": torch.tensor([[1, 2], [2, 1], [3, 0], [0, 2]])[:b],
    }


def test_shapes_and_gradients():
    enc = TabularMLPEncoder(3, [3, 2], embed_dim=4, hidden_dim=16, out_dim=8, dropout=0.1)
    out = enc(row_batch())
    assert out.shape == (4, 8) and enc.out_dim == 8 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    assert [e.num_embeddings for e in enc.embeddings] == [4, 3]  # cardinality + the unknown bucket


def test_unknown_bucket_and_out_of_range_ids():
    torch.manual_seed(0)
    enc = TabularMLPEncoder(0, [3], embed_dim=4, hidden_dim=16, out_dim=8, dropout=0.0).eval()
    codes = torch.tensor([[0], [1], [7], [-2]])  # unknown, known, and ids the training vocabulary lacks
    out = enc({"numeric": torch.zeros(4, 0), "categorical": codes})
    assert torch.isfinite(out).all() and not torch.allclose(out[0], out[1])
    torch.testing.assert_close(out[2], out[0])
    torch.testing.assert_close(out[3], out[0])


def test_missing_indicator_changes_the_features():
    enc = TabularMLPEncoder(2, [], embed_dim=4, hidden_dim=16, out_dim=8, dropout=0.0).eval()
    numeric = torch.zeros(2, 2)
    missing = torch.tensor([[False, False], [True, False]])
    out = enc({"numeric": numeric, "numeric_missing": missing, "categorical": torch.zeros(2, 0, dtype=torch.long)})
    assert not torch.allclose(out[0], out[1])  # a 0 that was missing differs from a real 0 (the mean)
    torch.testing.assert_close(enc({"numeric": numeric}), enc({"numeric": numeric, "numeric_missing": missing * False}))


def test_needs_some_columns():
    with pytest.raises(ValueError, match="at least one"):
        TabularMLPEncoder(0, [])


def test_categorical_embeddings_start_with_the_configured_spread():
    torch.manual_seed(0)
    small = TabularMLPEncoder(0, [2000], embed_dim=16)
    assert abs(small.embeddings[0].weight.std().item() - 0.01) < 0.001  # the default init_std
    wide = TabularMLPEncoder(0, [2000], embed_dim=16, init_std=1.0)
    assert abs(wide.embeddings[0].weight.std().item() - 1.0) < 0.05
