"""Write a robustness report: ``robustness.json``, ``robustness.png`` (one panel per corrupted modality, metric vs
level, plus a bar chart of the missing-modality subsets) and a rich table on the console."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def save_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/robustness.json`` and ``<out_dir>/robustness.png``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "robustness.json", out_dir / "robustness.png"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, png_path)
    return json_path, png_path


def level_names(curve: dict[str, Any]) -> list[str]:
    """Tick labels: ``clean`` then each level (dB for SNR sweeps)."""
    unit = " dB" if curve["kind"] == "audio" else ""
    return ["clean", *(f"{x:g}{unit}" for x in curve["levels"][1:])]


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """One panel per curve (metric vs level, levels evenly spaced as in relative robustness) and one bar chart."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    curves, subsets = report["curves"], report["missing_modalities"]
    panels = len(curves) + (1 if subsets else 0)
    if panels == 0:
        raise ValueError("the report has no curves and no missing-modality results: nothing to plot")
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    metric = report["metric"]
    clean = report["clean"][metric]
    for ax, curve in zip(axes.flat, curves, strict=False):
        ax.plot(range(len(curve["values"])), curve["values"], marker="o", linewidth=2)
        ax.axhline(clean, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(curve["values"])), level_names(curve), rotation=30, fontsize=8)
        ax.set_xlabel(curve["level_label"], fontsize=9)
        ax.set_ylabel(metric)
        summary = [f"rel. rob. {curve['relative_robustness']:.3f}"]
        if curve["auc"] is not None:
            summary.append(f"AUC {curve['auc']:.3g}")
        if curve["effective_robustness"] is not None:
            summary.append(f"eff. rob. {curve['effective_robustness']:+.3f}")
        ax.set_title(f"{curve['modality']}: {curve['corruption']}\n{' · '.join(summary)}", fontsize=10)
        ax.set_ylim(bottom=0.0, top=_top([*curve["values"], clean], 1.08))
        ax.grid(alpha=0.3)
    if subsets:
        ax = axes.flat[len(curves)]
        labels = ["+".join(s["present"]) for s in subsets]
        values = [s["value"] for s in subsets]
        bars = ax.bar(range(len(values)), values, color=["tab:green"] + ["tab:orange"] * (len(values) - 1))
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.set_ylim(bottom=0.0, top=_top(values, 1.12))
        ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title("present modalities (others masked)", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(f"robustness on {report['split']} ({metric}, {'higher' if report['higher_is_better'] else 'lower'}"
                 " is better)", fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _top(values: list[float], margin: float) -> float:
    """Upper y limit: the largest finite value times ``margin`` (1 when there is none); metrics here are >= 0."""
    finite = [v for v in values if math.isfinite(v)]
    return (max(finite) * margin if finite else 0.0) or 1.0


def print_report(report: dict[str, Any], title: str, console: Console | None = None) -> None:
    """Two rich tables: the corruption curves with their summaries, and the missing-modality subsets."""
    console = console or Console()
    metric = report["metric"]
    table = Table(title=f"{title}: {metric} under corruption ({report['split']})")
    for name in ("modality", "corruption", "level", metric, "AUC", "rel. rob.", "eff. rob."):
        table.add_column(name, justify="left" if name in ("modality", "corruption") else "right")
    for curve in report["curves"]:
        summary = [
            "-" if curve["auc"] is None else f"{curve['auc']:.4g}",
            f"{curve['relative_robustness']:.4f}",
            "-" if curve["effective_robustness"] is None else f"{curve['effective_robustness']:+.4f}",
        ]
        for k, (name, value) in enumerate(zip(level_names(curve), curve["values"], strict=True)):
            first = k == 0
            table.add_row(curve["modality"] if first else "", curve["corruption"] if first else "", name,
                          f"{value:.4f}", *(summary if first else ["", "", ""]))  # fmt: skip
        table.add_section()
    console.print(table)
    if report["missing_modalities"]:
        subsets = Table(title=f"{title}: {metric} with modalities missing ({report['split']})")
        for name in ("present", "absent", metric):
            subsets.add_column(name, justify="right" if name == metric else "left")
        for row in report["missing_modalities"]:
            subsets.add_row("+".join(row["present"]), "+".join(row["absent"]) or "-", f"{row['value']:.4f}")
        console.print(subsets)
    for note in report["notes"]:
        console.print(f"note: {note}")
