"""``mmfw-compare <folder>...``: rank runs by the metric they optimised, from their run folders alone (offline).

    mmfw-compare logs/train/multiruns/2026-11-29_10-00-00_ab12cd      # one sweep
    mmfw-compare logs/train/multiruns/<a> logs/train/multiruns/<b>    # several sweeps together
    mmfw-compare logs/train/runs/<run>  logs/train/runs               # a single run, a folder of runs

Runs whose configs differ only in ``seed`` form one row: mean ± std over them (n). Runs that did not complete
(failed, interrupted, still running) are listed with their error, never dropped. Writes ``comparison.csv`` (one row
per configuration), ``comparison_runs.csv`` (one row per run) and ``comparison.png`` into ``--out`` (default: the
folder given, or ./comparison for several).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mmfw.runs import run_folder

# Keys that do not make two runs different configurations (a cross-validation fold is a replicate, like a seed).
REPLICATE_KEYS = ("seed", "resume", "datamodule.fold")


@dataclass
class Run:
    """One run folder as the comparison sees it."""

    folder: Path
    status: str
    overrides: list[str]
    config_key: str
    seed: object
    metric: str | None
    mode: str | None
    value: float | None
    test_metrics: dict[str, float]
    error: str | None


@dataclass
class Group:
    """Runs of one configuration (differing only in seed)."""

    key: str
    label: str = ""
    runs: list[Run] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [v for run in self.completed if (v := metric_value(run, metric)) is not None and math.isfinite(v)]

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.status == "completed"]


def load_run(folder: Path) -> Run:
    record = run_folder.read_run_json(folder)
    config = yaml.safe_load((folder / run_folder.HYDRA_CONFIG).read_text()) or {}
    seed = config.get("seed")
    for key in REPLICATE_KEYS:
        *parents, last = key.split(".")
        node = config if not parents else config.get(parents[0]) or {}
        node.pop(last, None)
    # Interpolations stay unresolved in .hydra/config.yaml, so paths that differ per run compare equal.
    config_key = hashlib.sha1(yaml.safe_dump(config, sort_keys=True).encode()).hexdigest()[:10]
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = record.get("overrides")
    if overrides is None and overrides_file.is_file():
        overrides = yaml.safe_load(overrides_file.read_text()) or []
    monitor = record.get("monitor") or {}
    return Run(
        folder=folder,
        status=record.get("status", "not started"),
        overrides=list(overrides or []),
        config_key=config_key,
        seed=seed,
        metric=monitor.get("metric") or (config.get("monitor") or {}).get("metric"),
        mode=monitor.get("mode") or (config.get("monitor") or {}).get("mode"),
        value=monitor.get("best"),
        test_metrics=record.get("test_metrics") or {},
        error=record.get("error"),
    )


def metric_value(run: Run, metric: str) -> float | None:
    if metric == run.metric:
        return run.value
    return run.test_metrics.get(metric)


def group_runs(runs: list[Run]) -> list[Group]:
    """One group per configuration, labelled by the overrides that are not shared by every run (seed left out)."""
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(run.config_key, Group(run.config_key)).runs.append(run)

    def varying(run: Run) -> list[str]:
        return [o for o in run.overrides if o.split("=", 1)[0].lstrip("+~") not in REPLICATE_KEYS]

    shared = set.intersection(*(set(varying(run)) for run in runs)) if len(runs) > 1 else set()
    seen: Counter[str] = Counter()
    for group in groups.values():
        own = varying(group.runs[0])
        # With a single configuration nothing differs: show what it was run with.
        label = " ".join(o for o in own if o not in shared) or " ".join(own) or "(defaults)"
        seen[label] += 1
        group.label = label if seen[label] == 1 else f"{label} #{seen[label]}"
    return list(groups.values())


def summarize(values: list[float]) -> tuple[float, float, int]:
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def rank(groups: list[Group], metric: str, mode: str) -> list[Group]:
    """Best first; configurations with no completed run last."""
    sign = -1.0 if mode == "max" else 1.0

    def key(group: Group) -> tuple[int, float]:
        mean = summarize(group.values(metric))[0]
        return (1, 0.0) if math.isnan(mean) else (0, sign * mean)

    return sorted(groups, key=key)


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "-"
    return f"{mean:.4f} ± {std:.4f} ({n})" if n > 1 else f"{mean:.4f} (1)"


def test_counterpart(metric: str) -> str:
    """``val/acc`` -> ``test/acc``: the same metric on the test split."""
    return "test/" + metric.split("/", 1)[1] if metric.startswith("val/") else metric


def compare(folders: list[Path], out: Path, metric: str | None = None, mode: str | None = None) -> list[Group]:
    """Rank every run found under ``folders``; print the table and write CSVs and a chart into ``out``."""
    paths = sorted({p.resolve() for folder in folders for p in run_folder.find_runs(folder)})
    if not paths:
        raise SystemExit(f"no run folders (with .hydra/config.yaml) under {', '.join(map(str, folders))}")
    runs = [load_run(path) for path in paths]
    metrics = Counter(run.metric for run in runs if run.metric)
    metric = metric or (metrics.most_common(1)[0][0] if metrics else "val/acc")
    mode = mode or next((run.mode for run in runs if run.metric == metric and run.mode), None) or guess_mode(metric)
    groups = rank(group_runs(runs), metric, mode)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(groups, metric, out)
    print_table(groups, metric, mode, runs, out)
    plot(groups, metric, mode, out / "comparison.png")
    return groups


def guess_mode(metric: str) -> str:
    return "min" if any(word in metric for word in ("loss", "err", "mse", "mae")) else "max"


def write_csv(groups: list[Group], metric: str, out: Path) -> None:
    test_metric = test_counterpart(metric)
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "config",
                "metric",
                "mean",
                "std",
                "n",
                "not_completed",
                test_metric + "_mean",
                test_metric + "_std",
                "runs",
            ]
        )
        for i, group in enumerate(groups, start=1):
            mean, std, n = summarize(group.values(metric))
            test_mean, test_std, _ = summarize(group.values(test_metric))
            runs = " ".join(str(run.folder) for run in group.runs)
            writer.writerow(
                [
                    i,
                    group.label,
                    metric,
                    mean,
                    std,
                    n,
                    len(group.runs) - len(group.completed),
                    test_mean,
                    test_std,
                    runs,
                ]
            )
    with open(out / "comparison_runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "config", "seed", "status", metric, test_metric, "error"])
        for group in groups:
            for run in group.runs:
                writer.writerow(
                    [
                        run.folder,
                        group.label,
                        run.seed,
                        run.status,
                        metric_value(run, metric),
                        metric_value(run, test_metric),
                        run.error or "",
                    ]
                )


def print_table(groups: list[Group], metric: str, mode: str, runs: list[Run], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:
        console.width = 160  # a file or a pipe: wrap less than a terminal's 80 columns
    test_metric = test_counterpart(metric)
    table = Table(title=f"{len(runs)} runs ranked by {metric} ({mode}); mean ± std (n) over seeds")
    table.add_column("#", justify="right")
    table.add_column("config", overflow="fold")
    table.add_column(metric, justify="right")
    table.add_column(test_metric, justify="right")
    table.add_column("not completed", justify="right")
    table.add_column("runs", overflow="fold")
    for i, group in enumerate(groups, start=1):
        table.add_row(
            str(i),
            Text(pretty(group.label)),
            fmt(*summarize(group.values(metric))),
            fmt(*summarize(group.values(test_metric))),
            str(len(group.runs) - len(group.completed) or ""),
            Text(" ".join(run.folder.name for run in group.runs)),
        )
    console.print(table)
    failed = [(group, run) for group in groups for run in group.runs if run.status != "completed"]
    if failed:
        table = Table(title=f"{len(failed)} runs that did not complete")
        for column in ("run", "config", "status", "error"):
            table.add_column(column, overflow="fold")
        for group, run in failed:
            table.add_row(Text(str(run.folder)), Text(pretty(group.label)), Text(run.status), Text(run.error or ""))
        console.print(table)
    console.print(f"Wrote {out / 'comparison.csv'}, {out / 'comparison_runs.csv'}, {out / 'comparison.png'}")


def plot(groups: list[Group], metric: str, mode: str, path: Path) -> None:
    """Horizontal bars (mean ± std) per configuration, best on top, with each seed's value as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [group for group in groups if group.values(metric)]
    height = 1.0 + 0.45 * max(len(shown), 1)
    fig, ax = plt.subplots(figsize=(9, height))
    for y, group in enumerate(reversed(shown)):
        values = group.values(metric)
        mean, std, _ = summarize(values)
        ax.barh(y, mean, xerr=std, color="tab:blue", alpha=0.6, capsize=3)
        ax.plot(values, [y] * len(values), "o", color="black", markersize=3)
    labels = [f"{shorten(pretty(g.label))} (n={len(g.values(metric))})" for g in reversed(shown)]
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.set_xlabel(f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)")
    missing = len(groups) - len(shown)
    title = f"{sum(len(g.runs) for g in groups)} runs, {len(groups)} configurations"
    ax.set_title(title + (f"; {missing} with no completed run (see the table)" if missing else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pretty(label: str) -> str:
    """Floats in overrides to 4 significant digits, for display (the CSVs keep them whole)."""
    return re.sub(r"(?<==)(-?\d+\.\d{5,}(?:e-?\d+)?)\b", lambda m: f"{float(m.group(1)):.4g}", label)


def shorten(label: str, width: int = 60) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mmfw-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders, run folders or folders of runs")
    parser.add_argument("--out", type=Path, help="where to write the CSVs and the chart")
    parser.add_argument("--metric", help="rank by this metric (default: the one the runs optimised, run.json monitor)")
    parser.add_argument("--mode", choices=("max", "min"), help="whether higher or lower is better")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    out = args.out or (args.folders[0] if len(args.folders) == 1 else Path("comparison"))
    compare(args.folders, out, metric=args.metric, mode=args.mode)


if __name__ == "__main__":
    main()
