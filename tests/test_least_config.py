"""The least config for your own data: a manifest, its target and its columns; the rest is chosen from them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from cli_helpers import mmfw, only_child, output, run_json
from test_resume_changes import item_key, wandb_records


def write_reviews(root, n: int = 48):
    """A tiny text + tabular manifest with an imbalanced binary target (25% positive) and no split column."""
    words = ["great", "awful", "fine", "bad", "good", "poor"]
    rows = [
        {
            "review": " ".join(words[(i * k) % 6] for k in range(1, 4 + i % 5)) + (" loved it" if i % 4 == 0 else ""),
            "age": str(20 + i % 30),
            "dept": "abc"[i % 3],
            "label": "yes" if i % 4 == 0 else "no",
        }
        for i in range(n)
    ]
    path = root / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# The command of issue 9, as it stands.
COLUMNS = (
    "+datamodule.columns={a: {kind: text, column: review}, b: {kind: tabular, numeric: [age], categorical: [dept]}}"
)


@pytest.mark.slow  # one real training run and its linear baseline, about 30 s
def test_least_config_manifest_run_chooses_modalities_encoders_monitor_and_runs_the_baseline(tmp_path):
    manifest = write_reviews(tmp_path)
    result = mmfw(
        "mmfw-train",
        "datamodule=manifest",
        f"datamodule.manifest={manifest}",
        "datamodule.target=label",
        COLUMNS,
        "trainer.max_epochs=2",
        "baseline=true",
        root=tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, output(result)
    run = only_child(tmp_path / "logs" / "train" / "runs")
    config = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert config["modalities"] == ["a", "b"]
    assert sorted(config["encoder"]) == ["a", "b"] and "encoder_defaults" not in config  # only the used encoders
    assert config["encoder"]["a"]["_target_"] == "mmfw.encoders.NgramTextEncoder"
    assert config["encoder"]["b"]["_target_"] == "mmfw.encoders.tabular.TabularMLPEncoder"
    assert config["monitor"] == {"metric": "val/auroc", "mode": "max"}  # binary, minority 25% < 35%
    record = run_json(run)
    assert record["status"] == "completed" and record["truncated"] == {"a": 0}
    assert record["monitor"]["metric"] == "val/auroc"
    splits = pd.read_csv(run / "splits.csv")
    assert splits["row"].tolist() == list(range(1, 49)) and set(splits["split"]) == {"train", "val", "test"}
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"test/auroc", "baseline/test/auroc", "baseline[a]/test/auroc", "baseline[b]/test/auroc"} <= set(metrics)
    (log_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    summary = {
        item_key(item): json.loads(item.value_json)
        for record in wandb_records(log_file)
        if record.WhichOneof("record_type") == "summary"
        for item in record.summary.update
    }
    assert summary["baseline/test/auroc"] == pytest.approx(metrics["baseline/test/auroc"])
