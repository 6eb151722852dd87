"""Contrastive building blocks against direct computation; gather-with-gradient under real 2-process DDP (gloo)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mmfw.objectives.contrastive import ContrastiveLoss, ProjectionHeads, gather_with_grad
from mmfw.objectives.retrieval import RetrievalMetrics


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def infonce_by_hand(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """½ (-1/N Σ_i log softmax_j(s_ij)_i - 1/N Σ_j log softmax_i(s_ij)_j), written out element by element."""
    n = a.shape[0]
    s = [[t * float(a[i] @ b[j]) for j in range(n)] for i in range(n)]
    rows = sum(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    cols = sum(s[j][j] - math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return -0.5 * (rows + cols)


def sigmoid_by_hand(a: torch.Tensor, b: torch.Tensor, t: float, bias: float) -> float:
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            y = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-y * (t * float(a[i] @ b[j]) + bias)))  # -log σ(y (s + b))
    return total / n


def test_infonce_is_the_formula_and_temperature_is_learnable_and_clamped():
    a, b = unit(6, 4, seed=0), unit(6, 4, seed=1)
    loss_fn = ContrastiveLoss(kind="infonce", init_temperature=0.07, gather=False)
    assert math.isclose(float(loss_fn.scale), 1 / 0.07, rel_tol=1e-6)
    loss = loss_fn({"audio": a, "image": b})
    assert math.isclose(float(loss), infonce_by_hand(a, b, 1 / 0.07), rel_tol=1e-5)
    loss.backward()
    assert loss_fn.log_scale.grad is not None and loss_fn.log_scale.grad != 0
    with torch.no_grad():
        loss_fn.log_scale.fill_(math.log(1000.0))  # past the clamp: t = 100, and no gradient pushes it further
    assert math.isclose(float(loss_fn.scale), 100.0, rel_tol=1e-6)
    loss_fn.log_scale.grad = None
    loss_fn({"audio": a, "image": b}).backward()
    assert float(loss_fn.log_scale.grad) == 0.0


def test_sigmoid_loss_is_the_formula_with_a_learnable_bias():
    a, b = unit(5, 3, seed=2), unit(5, 3, seed=3)
    loss_fn = ContrastiveLoss(kind="sigmoid", gather=False)
    assert math.isclose(float(loss_fn.scale), 10.0, rel_tol=1e-6) and float(loss_fn.bias) == -10.0
    with torch.no_grad():
        loss_fn.bias.fill_(-1.5)
    loss = loss_fn({"a": a, "b": b})
    assert math.isclose(float(loss), sigmoid_by_hand(a, b, 10.0, -1.5), rel_tol=1e-5)
    loss.backward()
    assert loss_fn.bias.grad is not None and loss_fn.bias.grad != 0


def test_three_modalities_average_the_pairs_over_samples_that_have_both():
    z = {m: unit(6, 4, seed=s) for s, m in enumerate(("a", "b", "c"))}
    present = torch.ones(6, 3, dtype=torch.bool)
    present[0, 1] = present[4, 2] = False  # sample 0 lacks b, sample 4 lacks c
    loss = ContrastiveLoss(init_temperature=0.5, gather=False)(z, present)
    keep_ab, keep_ac, keep_bc = [1, 2, 3, 4, 5], [0, 1, 2, 3, 5], [1, 2, 3, 5]
    want = (
        infonce_by_hand(z["a"][keep_ab], z["b"][keep_ab], 2.0)
        + infonce_by_hand(z["a"][keep_ac], z["c"][keep_ac], 2.0)
        + infonce_by_hand(z["b"][keep_bc], z["c"][keep_bc], 2.0)
    ) / 3
    assert math.isclose(float(loss), want, rel_tol=1e-5)


def test_projection_heads_are_unit_norm_per_modality():
    heads = ProjectionHeads({"audio": 5, "image": 7}, embed_dim=4, hidden_dim=8)
    out = heads({"audio": torch.randn(3, 5), "image": torch.randn(3, 9, 7)})  # vectors and tokens
    assert {m: tuple(z.shape) for m, z in out.items()} == {"audio": (3, 4), "image": (3, 4)}
    torch.testing.assert_close(out["image"].norm(dim=-1), torch.ones(3))


def test_retrieval_metrics_are_ranks_computed_directly():
    a = unit(30, 8, seed=4)
    b = F.normalize(a + 0.9 * unit(30, 8, seed=5), dim=-1)  # noisy matches
    metric = RetrievalMetrics(["audio", "image"], prefix="val/")
    for chunk in range(3):  # accumulated over batches
        rows = slice(10 * chunk, 10 * chunk + 10)
        metric.update({"audio": a[rows], "image": b[rows]})
    values = metric.compute()
    for q, k in ((a, b), (b, a)):
        sim = q @ k.T
        ranks = torch.tensor([1 + int((sim[i] > sim[i, i]).sum()) for i in range(30)], dtype=torch.float)
        name = "audio_to_image" if q is a else "image_to_audio"
        for kk in (1, 5, 10):
            assert float(values[f"val/recall@{kk}_{name}"]) == pytest.approx(float((ranks <= kk).float().mean()))
        assert float(values[f"val/median_rank_{name}"]) == pytest.approx(float(ranks.quantile(0.5)))
    assert 0 < float(values["val/recall@1"]) < 1
    collapsed = RetrievalMetrics(["audio", "image"])
    collapsed.update({"audio": torch.ones(10, 2), "image": torch.ones(10, 2)})
    assert float(collapsed.compute()["recall@1"]) == 0.0  # every key ties: no query is retrieved first


def test_gather_with_grad_is_the_identity_outside_ddp():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


# ---------------------------------------------------------------------------------------------- real DDP (gloo)
GLOBAL_BATCH, SIZES = 10, (6, 4)  # rank 0 holds 6 rows, rank 1 holds 4: uneven, as a last batch can be


class TwoTower(nn.Module):
    """Two linear encoders and the contrastive loss: ``forward(batch) -> loss``, so that DDP wraps the whole step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.audio, self.image, self.loss = nn.Linear(5, 3), nn.Linear(7, 3), ContrastiveLoss(kind="infonce")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss({"audio": F.normalize(self.audio(batch["audio"]), dim=-1),
                          "image": F.normalize(self.image(batch["image"]), dim=-1)})  # fmt: skip


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"audio": torch.randn(GLOBAL_BATCH, 5, generator=g), "image": torch.randn(GLOBAL_BATCH, 7, generator=g)}


def _rank(rank: int, port: int, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = nn.parallel.DistributedDataParallel(TwoTower())  # averages gradients over the ranks, as in training
        start = sum(SIZES[:rank])
        loss = model({m: x[start : start + SIZES[rank]] for m, x in global_batch().items()})
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": {n: p.grad for n, p in model.module.named_parameters()}},
                   out / f"rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned processes: ~50 s on a loaded 2-core machine
def test_gathered_loss_and_gradients_equal_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_rank, args=(free_port(), tmp_path), nprocs=2, join=True)
    single = TwoTower()
    loss = single(global_batch())
    loss.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["loss"], loss.detach())
        for name, p in single.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, msg=f"rank {rank}: gradient of {name}")


def test_label_matching_ranks_the_best_same_label_key():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    k = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
    labels = torch.tensor([0, 1, 0])
    metric = RetrievalMetrics(["a", "b"], ks=(1,), match="label")
    metric.update({"a": q, "b": k}, labels=labels)
    values = metric.compute()
    # a→b: query 0 (label 0) finds key 1 (label 1) first, then key 2 (label 0): rank 2; query 1 (label 1) finds keys
    # 0 and 2 before key 1: rank 3; query 2 finds key 2 (0.96) first: rank 1. By instance, query 0's key 0 ranks 3.
    assert float(values["median_rank_a_to_b"]) == 2.0 and float(values["recall@1_a_to_b"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="needs the labels"):
        metric.update({"a": q, "b": k})
