"""Mean ± std over seeds of the runs bench/real_data_baselines.sh wrote: model rows per tag, baseline rows from the
same run folders.   python bench/summarize_baselines.py logs/train/runs"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(folder: str) -> None:
    rows: dict[tuple[str, str], list[float]] = defaultdict(list)
    monitors = {}
    for run_json in sorted(Path(folder).glob("*/run.json")):
        record = json.loads(run_json.read_text())
        config = (run_json.parent / "resolved_config.yaml").read_text()
        tag = next((t for t in config.split("tags:\n")[1].splitlines() if t.startswith("- ")), "- ?")[2:]
        if record.get("status") != "completed" or ":" not in tag:
            continue  # not a run of bench/real_data_baselines.sh (tagged <dataset>:<variant>)
        dataset, variant = tag.split(":")
        metric = "test/" + record["monitor"]["metric"].split("/")[-1]
        metric = "test/acc" if metric == "test/loss" else metric
        monitors[dataset] = metric
        metrics = record.get("test_metrics", {})
        rows[(dataset, f"mmfw {variant}")].append(metrics[metric])
        if variant == "default":
            for key, value in metrics.items():
                if key.startswith("baseline") and key.endswith(metric):
                    rows[(dataset, key.removesuffix("/" + metric))].append(value)
    print("| dataset | metric | row | mean ± std | seeds |")
    print("|---|---|---|---|---|")
    for (dataset, row), values in sorted(rows.items()):
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(
            f"| {dataset} | {monitors[dataset]} | {row} | {statistics.mean(values):.4f} ± {std:.4f} | {len(values)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "logs/train/runs")
