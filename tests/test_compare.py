"""mmfw-compare: ranks configurations by the optimised metric, mean ± std over seeds, lists failed runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from mmfw.runs.compare import compare, main, pretty

BASE = {"monitor": {"metric": "val/acc", "mode": "max"}, "paths": {"output_dir": "${hydra:runtime.output_dir}"}}


def fake_run(folder: Path, overrides: list[str], value: float | None, status: str = "completed", **extra) -> Path:
    """A run folder as mmfw-train leaves it: .hydra/config.yaml + overrides.yaml + run.json."""
    config = {**BASE, "seed": 0, "fusion": {"_target_": "x"}}
    for override in overrides:
        key, val = override.split("=")
        if key == "seed":
            config["seed"] = int(val)
        else:
            config["fusion"] = {"_target_": val}
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    record = {"status": status, "overrides": overrides, **extra}
    if value is not None:
        record["monitor"] = {**BASE["monitor"], "best": value}
        record["test_metrics"] = {"test/acc": value - 0.1}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    sweep = tmp_path / "multiruns" / "sweep"
    values = {"concat": (0.80, 0.90), "late": (0.95, 0.85)}
    job = 0
    for fusion, (a, b) in values.items():
        for seed, value in enumerate((a, b)):
            fake_run(sweep / str(job), [f"fusion={fusion}", f"seed={seed}"], value)
            job += 1
    fake_run(sweep / str(job), ["fusion=gated", "seed=0"], None, status="failed", error="NonFiniteLossError: nan")
    return sweep


def test_ranks_configurations_over_seeds_and_lists_failures(sweep, capsys):
    groups = compare([sweep], sweep)
    assert [g.label for g in groups] == ["fusion=late", "fusion=concat", "fusion=gated"]
    late = groups[0]
    assert sorted(r.seed for r in late.runs) == [0, 1] and late.values("val/acc") == [0.95, 0.85]
    printed = capsys.readouterr().out
    assert "0.9000 ± 0.0707 (2)" in printed and "0.8500 ± 0.0707 (2)" in printed
    assert "NonFiniteLossError: nan" in printed and "failed" in printed
    rows = list(csv.DictReader(open(sweep / "comparison.csv")))
    assert [r["config"] for r in rows] == ["fusion=late", "fusion=concat", "fusion=gated"]
    assert float(rows[0]["mean"]) == pytest.approx(0.9) and rows[0]["n"] == "2" and rows[2]["not_completed"] == "1"
    assert float(rows[0]["test/acc_mean"]) == pytest.approx(0.8)
    runs = list(csv.DictReader(open(sweep / "comparison_runs.csv")))
    assert len(runs) == 5 and {r["status"] for r in runs} == {"completed", "failed"}
    assert (sweep / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_min_mode_and_other_metric(sweep):
    groups = compare([sweep], sweep / "out", metric="test/acc", mode="min")
    assert groups[0].label == "fusion=concat"


def test_accepts_a_single_run_and_a_folder_of_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    one = fake_run(runs / "2026-01-01_a", ["fusion=late"], 0.5)
    fake_run(runs / "2026-01-01_b", ["fusion=concat"], 0.6)
    assert len(compare([one], tmp_path / "single")) == 1
    main([str(runs), "--out", str(tmp_path / "all")])
    assert "fusion=concat" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "all" / "comparison.csv")))
    assert [r["config"] for r in rows] == ["fusion=concat", "fusion=late"]


def test_several_sweeps_together_and_bad_input(sweep, tmp_path):
    other = tmp_path / "multiruns" / "other"
    fake_run(other / "0", ["fusion=late", "seed=7"], 0.75)
    groups = compare([sweep, other], tmp_path / "both")
    assert len(next(g for g in groups if g.label == "fusion=late").runs) == 3  # same config, three seeds
    with pytest.raises(SystemExit):
        compare([tmp_path / "empty"], tmp_path / "x")


def test_long_floats_are_shortened_for_display():
    assert pretty("model.optimizer.lr=0.0012345678 fusion=late") == "model.optimizer.lr=0.001235 fusion=late"


def test_folds_are_aggregated_like_seeds(tmp_path):
    sweep = tmp_path / "folds"
    for fold, value in enumerate((0.7, 0.8, 0.9)):
        folder = fake_run(sweep / str(fold), ["fusion=concat", f"datamodule.fold={fold}"], value)
        config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
        config["fusion"], config["datamodule"] = {"_target_": "concat"}, {"folds": 3, "fold": fold}
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (group,) = compare([sweep], sweep)
    assert group.label == "fusion=concat" and sorted(group.values("val/acc")) == [0.7, 0.8, 0.9]
