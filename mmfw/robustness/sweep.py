"""Evaluate a trained model under per-modality corruptions swept over levels and under every subset of missing
modalities; returns a JSON-able report (see :func:`evaluate_robustness`).

A corruption (one class per file in this package) declares the modality ``kind`` it applies to, its ``levels``
(mild to severe; the clean point is always added first) and ``batches(datamodule, split, modality, level, seed)``,
which yields the split's batches with that modality corrupted. Batch-level corruptions (image noise, tabular drop)
act on the tensors; decode-level ones (audio SNR noise, text character drop) ask the datamodule for the split
decoded again from raw waveforms / text (``datamodule.corrupted_dataloader(split, modality, corrupt)``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from pytorch_lightning.utilities import move_data_to_device

from mmfw.contracts import FEATURES_KEY, KINDS, MASK_KEY, TARGET_KEY
from mmfw.robustness.curves import auc, effective_robustness, modality_subsets, relative_robustness

log = logging.getLogger(__name__)


class RobustnessConfigError(ValueError):
    """A robustness setting that cannot work with this run; the message names the config key."""


class Corruption(Protocol):
    kind: str  # the modality kind it applies to: image | audio | text | tabular
    name: str  # short name, e.g. gaussian_noise
    levels: list[float]  # mild to severe, clean point excluded
    level_label: str  # x-axis label
    clean_level: float | None  # the level of the clean point on the level axis (None: not on it, e.g. SNR = inf)

    def batches(self, datamodule: Any, split: str, modality: str, level: float, seed: int) -> Iterable[dict]: ...


def modality_kinds(datamodule: Any) -> dict[str, str]:
    """``{modality: kind}`` of the run's modalities (``datamodule.modality_kinds``, :mod:`mmfw.data.base`)."""
    kinds = dict(datamodule.modality_kinds)
    missing = [m for m in datamodule.modalities if m not in kinds]
    if missing:
        raise RobustnessConfigError(
            f"cannot tell the kind of modality {missing}: {type(datamodule).__name__}.modality_kinds lacks it"
        )
    return kinds


def plan_corruptions(
    corruptions: Mapping[str, Corruption | None], kinds: Mapping[str, str]
) -> tuple[list[tuple[str, Corruption]], list[str]]:
    """Which corruption runs on which modality, checked before any evaluation.

    A key of ``robustness.corruptions`` is a modality of the run (that modality only) or a kind (every modality of
    that kind not named on its own; a kind the run lacks is skipped with a note). Returns ``[(modality,
    corruption)]`` in the run's modality order, and the notes.
    """
    by_name: dict[str, Corruption] = {}
    by_kind: dict[str, Corruption] = {}
    for key, corruption in corruptions.items():
        where = f"robustness.corruptions.{key}"
        if corruption is None:
            continue
        if getattr(corruption, "kind", None) not in KINDS:
            raise RobustnessConfigError(
                f"{where}: {type(corruption).__name__} has kind {getattr(corruption, 'kind', None)!r}; the "
                f"modality kinds are {list(KINDS)}"
            )
        if key in kinds:
            expected = kinds[key]
        elif key in KINDS:
            expected = key
        else:
            raise RobustnessConfigError(
                f"{where}: {key!r} is neither a modality of this run ({list(kinds)}) nor a modality kind "
                f"({list(KINDS)}); remove it or set {where}=null"
            )
        if corruption.kind != expected:
            raise RobustnessConfigError(
                f"{where}: {type(corruption).__name__} corrupts {corruption.kind} data but {key!r} is "
                f"{'a modality of kind ' if key in kinds else 'the kind '}{expected!r}"
            )
        (by_name if key in kinds else by_kind)[key] = corruption
    plan = []
    for modality, kind in kinds.items():
        chosen = by_name.get(modality) or by_kind.get(kind)
        if chosen is not None:
            plan.append((modality, chosen))
    covered = {kinds[m] for m, _ in plan}
    notes = [f"robustness.corruptions.{k}: the run has no {k} modality, skipped" for k in by_kind if k not in covered]
    return plan, notes


@torch.inference_mode()
def score(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    metrics: Any,
    device: torch.device,
    mask_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """All of ``metrics`` (a torchmetrics collection) over ``batches``; ``mask_fn`` edits each batch's mask.

    Cached encoder outputs (``batch["features"]``, :mod:`mmfw.feature_cache`) are dropped: a corruption changes the
    inputs, so every modality goes through its real encoder here.
    """
    metrics.reset()
    for batch in batches:
        batch = move_data_to_device({k: v for k, v in batch.items() if k != FEATURES_KEY}, device)
        mask = batch[MASK_KEY] if mask_fn is None else mask_fn(batch[MASK_KEY])
        metrics.update(model.task.outputs(model(batch, mask)), model.task.metric_target(batch[TARGET_KEY]))
    return {name: float(value) for name, value in metrics.compute().items()}


def evaluate_robustness(
    model: torch.nn.Module,
    datamodule: Any,
    *,
    corruptions: Mapping[str, Corruption | None],
    split: str = "test",
    metric: str | None = None,
    seed: int = 0,
    missing_subsets: bool = True,
    baseline: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """The metric under each corruption level and each subset of present modalities.

    Args:
        model: a trained ``MultimodalModule`` (``model(batch, mask) -> logits``, ``model.task``).
        datamodule: set up for ``split``; its ``modalities`` order is the mask's column order.
        corruptions: ``{modality or kind: corruption}`` (see :func:`plan_corruptions`); None entries are off.
        split: ``test`` or ``val``.
        metric: the metric the curves and summaries use (``acc``, ``mse``...); None: the task's first metric.
        seed: seeds every corruption's draws (the same draws at every level).
        missing_subsets: also evaluate every non-empty proper subset of the modalities (mask bits off).
        baseline: a run folder (or its ``robustness.json``) whose curves give effective robustness.
        device: where the model runs.

    Returns:
        ``{"split", "metric", "higher_is_better", "seed", "modalities", "clean": {metric: value},
        "curves": [{"modality", "kind", "corruption", "level_label", "levels", "values", "metrics", "auc",
        "relative_robustness", "effective_robustness"}], "missing_modalities": [{"present", "absent", "value",
        "metrics"}], "notes": [...]}``; ``levels`` and ``values`` start with the clean point (level ``clean_level``).
    """
    modalities = list(datamodule.modalities)
    plan, notes = plan_corruptions(corruptions, modality_kinds(datamodule))
    baseline_report = load_baseline(baseline) if baseline else None
    device = torch.device(device)
    model = model.to(device).eval()
    metrics = model.task.metrics("").to(device)
    metric = metric or next(iter(metrics.keys()))
    if metric not in metrics:
        raise RobustnessConfigError(
            f"robustness.metric={metric!r} is not computed for a {model.task.kind} task: choose one of {list(metrics)}"
        )
    start = time.perf_counter()
    split_loader = getattr(datamodule, f"{split}_dataloader", None) if split in ("val", "test") else None
    if split_loader is None:
        raise RobustnessConfigError(f"robustness.split must be 'val' or 'test', got {split!r}")
    clean = score(model, split_loader(), metrics, device)
    report: dict[str, Any] = {
        "split": split,
        "metric": metric,
        "higher_is_better": bool(metrics[metric].higher_is_better),
        "seed": seed,
        "modalities": modalities,
        "clean": clean,
        "curves": [],
        "missing_modalities": [],
        "notes": notes,
    }
    for modality, corruption in plan:
        curve = corruption_curve(model, datamodule, modality, corruption, clean, split, metric, seed, metrics, device)
        curve["effective_robustness"] = baseline_effective_robustness(curve, baseline_report, metric, notes)
        report["curves"].append(curve)
    if missing_subsets and len(modalities) > 1:
        report["missing_modalities"] = missing_modality_scores(model, split_loader, modalities, metric, metrics, device)
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def corruption_curve(
    model: torch.nn.Module,
    datamodule: Any,
    modality: str,
    corruption: Corruption,
    clean: dict[str, float],
    split: str,
    metric: str,
    seed: int,
    metrics: Any,
    device: torch.device,
) -> dict[str, Any]:
    """One modality's curve: all metrics at the clean point and at each of the corruption's levels."""
    per_level = [clean]
    for level in corruption.levels:
        batches = corruption.batches(datamodule, split, modality, level, seed)
        per_level.append(score(model, batches, metrics, device))
        log.info("%s %s at %s: %s=%.4f", modality, corruption.name, level, metric, per_level[-1][metric])
    values = [m[metric] for m in per_level]
    return {
        "modality": modality,
        "kind": corruption.kind,
        "corruption": corruption.name,
        "level_label": corruption.level_label,
        "levels": [corruption.clean_level, *corruption.levels],
        "values": values,
        "metrics": per_level,
        "auc": curve_auc(values, corruption.clean_level, corruption.levels),
        "relative_robustness": relative_robustness(values),
        "effective_robustness": None,
    }


def missing_modality_scores(
    model: torch.nn.Module,
    split_loader: Callable[[], Iterable[dict]],
    modalities: list[str],
    metric: str,
    metrics: Any,
    device: torch.device,
) -> list[dict[str, Any]]:
    """The clean split with every non-empty proper subset of the modalities present (the others' mask bits off)."""
    rows = []
    for subset in modality_subsets(modalities):
        keep = torch.tensor([m in subset for m in modalities], device=device)
        values = score(model, split_loader(), metrics, device, mask_fn=lambda mask, keep=keep: mask & keep)
        rows.append(
            {"present": list(subset), "absent": [m for m in modalities if m not in subset],
             "value": values[metric], "metrics": values}
        )  # fmt: skip
    return rows


def curve_auc(values: list[float], clean_level: float | None, levels: list[float]) -> float | None:
    """Area in the levels' own units; where the clean point is off the axis (SNR), over the swept levels only."""
    if clean_level is not None:
        return auc(values, [clean_level, *levels])
    return auc(values[1:], levels) if len(levels) > 1 else None


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A robustness report from a run folder (``<run>/robustness/robustness.json``) or a JSON file."""
    path = Path(path)
    file = path / "robustness" / "robustness.json" if path.is_dir() else path
    if not file.is_file():
        raise RobustnessConfigError(
            f"robustness.baseline={str(path)!r}: no robustness report at {file}; run `mmfw-eval run={path} "
            "robustness=default` on the baseline first"
        )
    return json.loads(file.read_text())


def baseline_effective_robustness(
    curve: dict[str, Any], baseline: dict[str, Any] | None, metric: str, notes: list[str]
) -> float | None:
    """Effective robustness against the baseline's curve for the same modality, corruption and levels."""
    if baseline is None:
        return None
    if baseline.get("metric") != metric:
        note = f"the baseline reports {baseline.get('metric')!r}, not {metric!r}: no effective robustness"
        notes.extend([note] if note not in notes else [])
        return None
    for other in baseline.get("curves", []):
        same = (other["modality"], other["corruption"], other["levels"])
        if same == (curve["modality"], curve["corruption"], curve["levels"]):
            return effective_robustness(curve["values"], other["values"])
    notes.append(f"baseline has no {curve['corruption']} curve for {curve['modality']} at the same levels")
    return None
