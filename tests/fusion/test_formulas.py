"""Each fusion method against a direct computation of its docstring formula on small inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mmfw.fusion as fu

DIMS = {"a": 3, "b": 2, "c": 4}
MASK = torch.tensor([[True, True, True], [True, False, True], [False, False, True], [False, False, False]])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def feats(dims=DIMS, batch=4):
    return {m: torch.randn(batch, d) for m, d in dims.items()}


def test_concat_is_mlp_of_zeroed_features_and_mask():
    fusion = fu.ConcatFusion(DIMS, out_dim=5, num_layers=1, dropout=0.0, append_mask=True).eval()
    x = feats()
    z = torch.cat([x[m] * MASK[:, j, None] for j, m in enumerate(DIMS)] + [MASK.float()], dim=1)
    lin = fusion.mlp[0]
    torch.testing.assert_close(fusion(x, MASK), torch.relu(z @ lin.weight.T + lin.bias))


def test_late_averages_logits_of_present_modalities():
    fusion = fu.LateFusion(DIMS, num_outputs=2).eval()
    x = feats()
    logits = {m: fusion.classifiers[m](x[m]) for m in DIMS}
    out = fusion(x, MASK)
    torch.testing.assert_close(out[0], (logits["a"][0] + logits["b"][0] + logits["c"][0]) / 3)
    torch.testing.assert_close(out[1], (logits["a"][1] + logits["c"][1]) / 2)
    torch.testing.assert_close(out[2], logits["c"][2])
    torch.testing.assert_close(out[3], torch.zeros(2))


def test_late_learned_weights_are_softmax_over_present():
    fusion = fu.LateFusion(DIMS, num_outputs=2, learned_weights=True).eval()
    with torch.no_grad():
        fusion.weight_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = feats()
    logits = {m: fusion.classifiers[m](x[m]) for m in DIMS}
    out = fusion(x, MASK)
    w = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), 0)
    torch.testing.assert_close(out[0], w[0] * logits["a"][0] + w[1] * logits["b"][0] + w[2] * logits["c"][0])
    w = torch.softmax(torch.tensor([0.5, 2.0]), 0)
    torch.testing.assert_close(out[1], w[0] * logits["a"][1] + w[1] * logits["c"][1])
    torch.testing.assert_close(out[3], torch.zeros(2))


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_pool_sums_or_averages_present_projections(pooling):
    fusion = fu.PoolFusion(DIMS, out_dim=4, pooling=pooling, dropout=0.0).eval()
    x = feats()
    phi = torch.stack([fusion.phi[m](x[m]) * MASK[:, j, None] for j, m in enumerate(DIMS)], dim=1).sum(1)
    if pooling == "mean":
        phi = phi / torch.tensor([3.0, 2.0, 1.0, 1.0])[:, None]  # number present, at least 1
    torch.testing.assert_close(fusion(x, MASK), fusion.rho(phi))


def test_gated_is_softmax_gate_over_present_modalities():
    fusion = fu.GatedFusion(DIMS, out_dim=4, dropout=0.0).eval()
    x = feats()
    x0 = {m: x[m] * MASK[:, j, None] for j, m in enumerate(DIMS)}
    h = {m: torch.tanh(x0[m] @ fusion.proj[m].weight.T) for m in DIMS}
    g = (torch.cat(list(x0.values()), 1) @ fusion.gate.weight.T + fusion.gate.bias).view(4, 3, 4)
    out = fusion(x, MASK)
    z = torch.softmax(g[0], dim=0)
    torch.testing.assert_close(out[0], z[0] * h["a"][0] + z[1] * h["b"][0] + z[2] * h["c"][0])
    z = torch.sigmoid(g[1, 0] - g[1, 2])  # two present: the paper's sigmoid gate
    torch.testing.assert_close(out[1], z * h["a"][1] + (1 - z) * h["c"][1])
    torch.testing.assert_close(out[2], h["c"][2])
    torch.testing.assert_close(out[3], torch.zeros(4))


def test_tensor_fusion_is_outer_product_of_one_padded_projections():
    dims = {"a": 3, "b": 2, "c": 4}
    fusion = fu.TensorFusion(dims, proj_dim=2, out_dim=5, dropout=0.0).eval()
    x = feats(dims)
    f1 = {m: torch.cat([torch.ones(4, 1), fusion.proj[m](x[m]) * MASK[:, j, None]], 1) for j, m in enumerate(dims)}
    z = torch.einsum("bi,bj,bk->bijk", f1["a"], f1["b"], f1["c"]).flatten(1)
    assert fusion.tensor_dim == 27 and z.shape == (4, 27)
    torch.testing.assert_close(fusion.fused_tensor(x, MASK), z)
    # a missing modality keeps exactly the terms that do not involve it
    assert (z[1].view(3, 3, 3)[:, 1:, :] == 0).all() and (z[3].view(-1)[1:] == 0).all() and z[3, 0] == 1
    torch.testing.assert_close(fusion(x, MASK), fusion.mlp(z))


def test_lowrank_equals_full_tensor_fusion_with_equivalent_weight():
    dims = {"a": 3, "b": 2, "c": 4}
    fusion = fu.LowRankFusion(dims, rank=3, out_dim=5, dropout=0.0).eval()
    x = feats(dims)
    f1 = {m: torch.cat([torch.ones(4, 1), x[m] * MASK[:, j, None]], 1) for j, m in enumerate(dims)}
    z = torch.einsum("bi,bj,bk->bijk", f1["a"], f1["b"], f1["c"])  # explicit tensor fusion (B, 4, 3, 5)
    wa, wb, wc = (fusion.factors[m] for m in dims)  # (rank, D_m + 1, out)
    w_full = torch.einsum("r,rio,rjo,rko->ijko", fusion.fusion_weights, wa, wb, wc)
    expected = torch.einsum("bijk,ijko->bo", z, w_full) + fusion.bias
    torch.testing.assert_close(fusion(x, MASK), expected, rtol=1e-4, atol=1e-5)


def test_film_modulates_the_others_and_is_identity_without_conditioner():
    fusion = fu.FiLMFusion(DIMS, conditioning="b", out_dim=4, dropout=0.0).eval()
    torch.nn.init.normal_(fusion.film.weight)  # non-identity modulation
    x = feats()
    out = fusion(x, MASK)
    h = (fusion.proj["a"](x["a"]) + fusion.proj["c"](x["c"])) / 2
    dg, beta = fusion.film(x["b"]).chunk(2, dim=-1)
    torch.testing.assert_close(out[0], torch.relu((1 + dg[0]) * h[0] + beta[0]))
    torch.testing.assert_close(out[1], torch.relu(h[1]))  # conditioner missing: gamma = 1, beta = 0
    torch.testing.assert_close(out[2], torch.relu(fusion.proj["c"](x["c"])[2]))
    only_cond = torch.tensor([[False, True, False]])
    torch.testing.assert_close(fusion({m: v[:1] for m, v in x.items()}, only_cond)[0], torch.relu(beta[0]))
    with pytest.raises(ValueError, match="fusion.conditioning"):
        fu.FiLMFusion(DIMS, conditioning="text")


def test_bilinear_is_sum_pooled_product_with_neutral_missing():
    dims = {"a": 3, "b": 2}
    fusion = fu.BilinearFusion(dims, out_dim=4, factor=3, dropout=0.0).eval()
    x = feats(dims)
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    x = {m: v[:3] for m, v in x.items()}
    p, q = fusion.proj["a"](x["a"]), fusion.proj["b"](x["b"])
    q = torch.where(mask[:, 1:], q, torch.ones_like(q))
    p = torch.where(mask[:, :1], p, torch.ones_like(p))
    z = (p * q).view(3, 4, 3).sum(-1)
    z = torch.sign(z) * (torch.sqrt(z.abs() + 1e-8) - 1e-4)
    torch.testing.assert_close(fusion(x, mask), F.normalize(z, dim=-1))


def test_attention_output_ignores_padded_tokens():
    fusion = fu.AttentionFusion(DIMS, d_model=8, num_heads=2, num_layers=2, dim_feedforward=16, dropout=0.0).eval()
    x = {"a": torch.randn(4, 2, 3), "b": torch.randn(4, 2), "c": torch.randn(4, 3, 4)}  # mixed tokens and vectors
    tokens, padding = fusion.tokens(x, MASK)
    assert tokens.shape == (4, 1 + 2 + 1 + 3, 8)
    out = fusion(x, MASK)
    for i in range(4):
        keep = ~padding[i]  # the same encoder run on the present tokens only, no padding at all
        torch.testing.assert_close(out[i], fusion.encoder(tokens[i : i + 1, keep])[0, 0], rtol=1e-5, atol=1e-5)


def test_cross_attention_single_key_stream_formula():
    dims = {"a": 3, "b": 2}
    fusion = fu.CrossAttentionFusion(dims, d_model=4, num_heads=2, num_layers=1, dim_feedforward=8, out_dim=5)
    fusion.eval()
    x = feats(dims)
    mask = torch.tensor([[True, True], [True, False], [False, True], [False, False]])
    xa, xb = fusion.proj["a"](x["a"]), fusion.proj["b"](x["b"] * mask[:, 1:])

    def stream(block, z, src, src_present):
        # one key: attention weights are exactly 1, so CM(q, kv) = W_o W_v LN(kv) + b
        attn = block.attn
        wv, bv = attn.in_proj_weight[8:], attn.in_proj_bias[8:]
        a = attn.out_proj(block.norm_kv(src) @ wv.T + bv)
        z = z + a * src_present[:, None]
        return z + block.ff(block.norm_ff(z))

    assert fusion.pairs == [("b", "a"), ("a", "b")]
    b_to_a = stream(fusion.streams[0][0], xa, xb, mask[:, 1]) * mask[:, :1]
    a_to_b = stream(fusion.streams[1][0], xb, xa, mask[:, 0]) * mask[:, 1:]
    out = fusion(x, mask)
    torch.testing.assert_close(out, fusion.out(torch.cat([b_to_a, a_to_b], dim=1)), rtol=1e-5, atol=1e-5)
    # a missing source still lets the target's own information through
    assert not torch.allclose(out[1], fusion.out(torch.zeros(1, 8))[0])
