"""Preference building blocks: Bradley–Terry and its metrics against direct computation; ratings to pairs."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from mmfw.objectives.preference import PairsError, PreferenceMetrics, bradley_terry_loss, pairs_from_ratings, read_pairs


def test_bradley_terry_is_the_formula_with_margin_and_soft_targets():
    rc, rr = torch.tensor([2.0, -0.5, 0.3]), torch.tensor([1.0, 0.5, 0.3])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    d = [1.0, -1.0, 0.0]
    assert float(bradley_terry_loss(rc, rr)) == pytest.approx(-sum(math.log(sig(x)) for x in d) / 3, rel=1e-6)
    margin = torch.tensor([0.5, 0.0, 1.0])
    want = -sum(math.log(sig(x - m)) for x, m in zip(d, [0.5, 0.0, 1.0], strict=True)) / 3
    assert float(bradley_terry_loss(rc, rr, margin=margin)) == pytest.approx(want, rel=1e-6)
    y = torch.tensor([1.0, 1.0, 0.5])  # a tie kept with target ½
    want = -sum(t * math.log(sig(x)) + (1 - t) * math.log(sig(-x)) for x, t in zip(d, [1, 1, 0.5], strict=True)) / 3
    assert float(bradley_terry_loss(rc, rr, target=y)) == pytest.approx(want, rel=1e-6)


def test_preference_metrics_against_direct_computation():
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(200, generator=g) + 0.5, torch.randn(200, generator=g)
    rr[:5] = rc[:5]  # ties count ½
    metrics = PreferenceMetrics(prefix="val/")
    metrics.update(rc[:120], rr[:120])
    metrics.update(rc[120:], rr[120:])
    values = metrics.compute()
    d = rc - rr
    acc = float(((d > 0).float() + 0.5 * (d == 0).float()).mean())
    assert float(values["val/pair_acc"]) == pytest.approx(acc, abs=1e-6)
    s = d[:, None] + d[None, :]  # AUROC of {d} vs {-d}: P(d_a > -d_b), ties ½
    auroc = float(((s > 0).float() + 0.5 * (s == 0).float()).mean())
    assert float(values["val/pair_auroc"]) == pytest.approx(auroc, abs=1e-5)
    p = torch.cat([torch.sigmoid(d), torch.sigmoid(-d)])
    y = torch.cat([torch.ones(200), torch.zeros(200)])
    bins = torch.clamp((p * 10).ceil().long() - 1, 0, 9)  # (k/10, (k+1)/10]
    ece = sum(float((p[bins == k].mean() - y[bins == k].mean()).abs()) * int((bins == k).sum()) / 400
              for k in range(10) if (bins == k).any())  # fmt: skip
    assert float(values["val/pair_ece"]) == pytest.approx(ece, abs=1e-5)


RATED = pd.DataFrame({
    "id": ["r1", "r2", "r3", "r4", "r5", "r6", "r7"],
    "stars": ["5", "3", "3", "", "1", "4", "2"],
    "label": ["positive", "neutral", "neutral", "", "negative", "positive", "negative"],
    "product": ["p", "p", "p", "p", "p", "q", "q"],
})  # fmt: skip


def test_pairs_from_ratings_within_groups_ties_dropped_by_default():
    pairs = pairs_from_ratings(RATED, "stars", group="product", id_column="id")
    got = {(c, r, g) for c, r, g in zip(pairs["chosen"], pairs["rejected"], pairs["gap"], strict=True)}
    assert got == {("r1", "r2", 2.0), ("r1", "r3", 2.0), ("r1", "r5", 4.0), ("r2", "r5", 2.0), ("r3", "r5", 2.0),
                   ("r6", "r7", 2.0)}  # r4 unrated; r2 = r3 a tie; no pair across products  # fmt: skip
    assert (pairs["target"] == 1.0).all()
    half = pairs_from_ratings(RATED, "stars", group="product", id_column="id", ties="half")
    assert len(half) == 7 and half[half["target"] == 0.5][["chosen", "rejected"]].values.tolist() == [["r2", "r3"]]
    everyone = pairs_from_ratings(RATED, "stars", id_column="id")  # one group: r6 meets r1 too
    assert ("r1", "r6") in set(zip(everyone["chosen"], everyone["rejected"], strict=True))


def test_pairs_from_label_ratings_need_their_order():
    pairs = pairs_from_ratings(RATED, "label", group="product", id_column="id",
                               order=["negative", "neutral", "positive"])  # fmt: skip
    assert len(pairs) == 6 and ("r6", "r7") in set(zip(pairs["chosen"], pairs["rejected"], strict=True))
    with pytest.raises(PairsError, match=r"rating column 'label' row 0 holds 'positive', not a number: give `order`"):
        pairs_from_ratings(RATED, "label", id_column="id")
    with pytest.raises(PairsError, match=r"holds \['neutral'\], which `order`"):
        pairs_from_ratings(RATED, "label", id_column="id", order=["negative", "positive"])
    with pytest.raises(PairsError, match=r"column 'shop' is not in the manifest"):
        pairs_from_ratings(RATED, "stars", group="shop")


def test_read_pairs_checks_every_id_and_names_file_and_row(tmp_path):
    ids = RATED["id"].tolist()
    good = tmp_path / "pairs.csv"
    pd.DataFrame({"chosen": ["r1", "r6"], "rejected": ["r2", "r7"], "margin": [1, 0]}).to_csv(good, index=False)
    pairs = read_pairs(good, ids)
    assert pairs[["chosen", "rejected"]].values.tolist() == [["r1", "r2"], ["r6", "r7"]]
    assert pairs["target"].tolist() == [1.0, 1.0] and pairs["margin"].tolist() == [1.0, 0.0]
    cases = {
        "unknown.csv": ({"chosen": ["r1", "r9"], "rejected": ["r2", "r3"]},
                        r"unknown.csv row 2: chosen id 'r9' is not a sample of the sample manifest"),
        "self.jsonl": ({"chosen": ["r1"], "rejected": ["r1"]}, r"self.jsonl row 1: sample 'r1' is paired with itself"),
        "columns.csv": ({"winner": ["r1"], "loser": ["r2"]}, r"columns.csv: no column \['chosen', 'rejected'\]"),
        "empty.csv": ({"chosen": ["r1", "r2"], "rejected": ["r3", ""]}, r"empty.csv row 2: `rejected` is empty"),
        "target.csv": ({"chosen": ["r1"], "rejected": ["r2"], "target": [2]}, r"row 1: target '2' is not a number in"),
    }  # fmt: skip
    for name, (columns, message) in cases.items():
        path = tmp_path / name
        frame = pd.DataFrame(columns)
        frame.to_json(path, orient="records", lines=True) if name.endswith(".jsonl") else frame.to_csv(
            path, index=False
        )
        with pytest.raises(PairsError, match=message):
            read_pairs(path, ids)
    with pytest.raises(PairsError, match=r"not found"):
        read_pairs(tmp_path / "missing.csv", ids)
