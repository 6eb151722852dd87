"""Every fusion config in ``conf/fusion/``: shape, finiteness, mask invariance and parameter registration.

Formula checks of each method against a direct computation live in ``test_formulas.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from mmfw.fusion.factory import build_fusion

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "fusion"
CONFIGS = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
NUM_OUTPUTS = 5
B = 6
# modality subsets with different widths; names are arbitrary on purpose
SUBSETS = {1: {"a": 6}, 2: {"a": 6, "b": 4}, 3: {"a": 6, "b": 4, "c": 9}}
# (config, M) pairs for which the method is undefined and must refuse to build with a ValueError
UNDEFINED = {("bilinear", 1), ("bilinear", 3), ("film", 1)}
# extra constructor settings whose code paths the default config does not reach
VARIANTS = [(name, {}) for name in CONFIGS] + [("late", {"learned_weights": True}), ("concat", {"append_mask": False})]


def build(name: str, in_dims: dict[str, int], **overrides) -> nn.Module:
    cfg = OmegaConf.create({"fusion": OmegaConf.load(CONF_DIR / f"{name}.yaml")})
    for key, value in overrides.items():
        cfg.fusion[key] = value
    return build_fusion(instantiate(cfg.fusion), in_dims=in_dims, num_outputs=NUM_OUTPUTS)


def make_mask(m: int) -> torch.Tensor:
    """Rows: all present, each modality missing alone, all missing; padded to B with all-present rows."""
    rows = [[True] * m] + [[j != i for j in range(m)] for i in range(m)] + [[False] * m]
    rows += [[True] * m] * (B - len(rows))
    return torch.tensor(rows)


def make_features(in_dims: dict[str, int], batch: int, tokens: int | None = None) -> dict[str, torch.Tensor]:
    # different token counts per modality: token-aware methods must not assume equal lengths
    return {
        m: torch.randn(batch, d) if tokens is None else torch.randn(batch, tokens + j, d)
        for j, (m, d) in enumerate(in_dims.items())
    }


def defined_cases():
    return [(n, m) for n in CONFIGS for m in SUBSETS if (n, m) not in UNDEFINED]


def test_every_method_has_a_config():
    import mmfw.fusion

    expected = {"concat", "late", "sum", "mean", "gated", "attention", "cross_attention", "tensor", "lowrank", "film"}
    assert expected | {"bilinear"} <= set(CONFIGS)
    targets = {OmegaConf.load(CONF_DIR / f"{n}.yaml")._target_ for n in CONFIGS}
    assert targets == {f"mmfw.fusion.{cls}" for cls in mmfw.fusion.__all__}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_documented_partial(name):
    text = (CONF_DIR / f"{name}.yaml").read_text()
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert cfg._target_.startswith("mmfw.fusion.") and cfg._partial_ is True
    for key in cfg:
        if key not in ("_target_", "_partial_"):
            line = next(ln for ln in text.splitlines() if ln.startswith(f"{key}:"))
            assert "#" in line, f"{name}.yaml: hyperparameter {key!r} needs a comment"


@pytest.mark.parametrize("name,m", defined_cases())
@pytest.mark.parametrize("tokens", [None, 3], ids=["vectors", "tokens"])
def test_shape_and_finite(name, m, tokens):
    in_dims = SUBSETS[m]
    fusion = build(name, in_dims)
    mask = make_mask(m)
    out = fusion(make_features(in_dims, mask.shape[0], tokens), mask)
    assert isinstance(fusion.out_dim, int)
    assert out.shape == (mask.shape[0], fusion.out_dim)
    assert torch.isfinite(out).all()
    assert type(fusion).outputs_logits is (name == "late")
    if name == "late":
        assert fusion.out_dim == NUM_OUTPUTS


@pytest.mark.parametrize("name,m", sorted(c for c in UNDEFINED if c[0] in CONFIGS))
def test_undefined_modality_count_fails_clearly(name, m):
    with pytest.raises(ValueError, match=r"fusion\.|modalities"):
        build(name, SUBSETS[m])


@pytest.mark.parametrize("name,m", defined_cases())
def test_masked_inputs_are_ignored(name, m):
    torch.manual_seed(0)
    in_dims = SUBSETS[m]
    fusion = build(name, in_dims).eval()
    mask = make_mask(m)
    feats = make_features(in_dims, mask.shape[0])
    garbage = {k: torch.where(mask[:, j, None], v, 100 * torch.randn_like(v)) for j, (k, v) in enumerate(feats.items())}
    with torch.no_grad():
        torch.testing.assert_close(fusion(garbage, mask), fusion(feats, mask), rtol=1e-5, atol=1e-5)


def _reachable_trainable_tensors(obj, seen: set[int], found: dict[int, torch.Tensor]) -> None:
    """Every Parameter (or grad-requiring tensor) reachable through attributes, dicts, lists and tuples."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if isinstance(obj, nn.Parameter) or obj.requires_grad:
            found[id(obj)] = obj
        return
    if isinstance(obj, nn.Module):
        children = list(vars(obj).values())
    elif isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, list | tuple | set):
        children = list(obj)
    else:
        return
    for child in children:
        _reachable_trainable_tensors(child, seen, found)


GRAD_CASES = [(n, o, m) for n, o in VARIANTS for m in SUBSETS if (n, m) not in UNDEFINED]


@pytest.mark.parametrize(
    "name,overrides,m", GRAD_CASES, ids=[f"{n}-{m}{'-' + str(o) if o else ''}" for n, o, m in GRAD_CASES]
)
def test_every_parameter_is_registered_and_trained(name, overrides, m):
    torch.manual_seed(0)
    in_dims = SUBSETS[m]
    fusion = build(name, in_dims, **overrides).train()
    mask = torch.ones(B, m, dtype=torch.bool)
    fusion(make_features(in_dims, B), mask).sum().backward()
    params = dict(fusion.named_parameters())
    assert params, "a fusion with no parameters cannot learn anything"
    for pname, p in params.items():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    found: dict[int, torch.Tensor] = {}
    _reachable_trainable_tensors(fusion, set(), found)
    assert {id(p) for p in fusion.parameters()} == set(found)
    assert sum(p.numel() for p in fusion.parameters()) == sum(t.numel() for t in found.values())
