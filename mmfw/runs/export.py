"""``mmfw-export``: a run's fused model (encoders + fusion + head) as one ONNX or TorchScript file that takes the mask.

Inputs, in order: one tensor per modality (a tabular modality gives three: ``<m>.numeric``, ``<m>.numeric_missing``,
``<m>.categorical``), batch first, as the run's preprocessing makes them (``mmfw.load_run(run).decode(file)``), then
``mask`` — bool ``(B, M)``, column ``j`` False where modality ``j`` is missing (its tensor is then ignored; zeros by
convention). Output: ``logits`` ``(B, num_outputs)`` (a reward model, ``objective=preference``: ``reward`` ``(B, 1)``,
one score per sample). ``export.json`` next to the file lists the inputs' names, shapes
and dtypes, the task and its class names, and how far the exported model's outputs were from PyTorch's on real samples
of the run's test split, one of them with a modality missing (the export fails beyond ``tolerance``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from mmfw.contracts import MASK_KEY
from mmfw.module import MultimodalModule
from mmfw.runs.load import LoadedRun, load_run

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The model could not be exported, or the exported model does not compute what PyTorch computes."""


class FusedModel(nn.Module):
    """The run's encoders, fusion and head as a function of plain tensors: ``forward(*inputs, mask) -> logits``.

    It computes what :meth:`mmfw.module.MultimodalModule.forward` computes (the export check compares them), holding
    the parts rather than the LightningModule, whose properties (``trainer``) the TorchScript tracer would read.
    ``layout`` names the inputs: ``(modality, None)`` for a tensor, ``(modality, key)`` for one entry of a modality
    given as a dict of tensors (tabular).
    """

    def __init__(self, model: MultimodalModule, layout: list[tuple[str, str | None]]) -> None:
        super().__init__()
        self.encoders, self.fusion, self.head = model.encoders, model.fusion, model.head
        self.layout = list(layout)
        self.output_name = model.objective.output_name  # logits; reward for a reward model

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs: dict[str, Any] = {}
        for (modality, key), tensor in zip(self.layout, tensors[:-1], strict=True):
            if key is None:
                inputs[modality] = tensor
            else:
                inputs.setdefault(modality, {})[key] = tensor
        features = {name: encoder(inputs[name]) for name, encoder in self.encoders.items()}
        return self.head(self.fusion(features, tensors[-1]))

    @property
    def input_names(self) -> list[str]:
        return input_names(self.layout)


def input_names(layout: list[tuple[str, str | None]]) -> list[str]:
    """The exported model's input names: ``<modality>`` or ``<modality>.<key>``, then ``mask``."""
    return [m if key is None else f"{m}.{key}" for m, key in layout] + [MASK_KEY]


def model_inputs(dataset: Dataset, modalities: list[str]) -> dict[str, torch.Tensor]:
    """Decoded samples (e.g. ``mmfw.load_run(run).decode(file).dataset``) as the exported model's inputs, by name:
    what a service feeds ONNX Runtime or the TorchScript module."""
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    layout = layout_of(batch, modalities)
    return dict(zip(input_names(layout), flatten(batch, layout), strict=True))


def layout_of(batch: dict[str, Any], modalities: list[str]) -> list[tuple[str, str | None]]:
    return [(m, key) for m in modalities for key in (sorted(batch[m]) if isinstance(batch[m], dict) else [None])]


def flatten(batch: dict[str, Any], layout: list[tuple[str, str | None]]) -> tuple[torch.Tensor, ...]:
    """The batch's tensors in ``layout`` order, then the mask."""
    tensors = [batch[m] if key is None else batch[m][key] for m, key in layout]
    return (*tensors, batch[MASK_KEY])


def example_batch(loaded: LoadedRun, n: int = 8) -> dict[str, Any]:
    """The first ``n`` samples of the run's test split (else its validation split), the last one with its first
    modality missing (mask bit False, its tensor zeros, as the datamodules give a missing modality)."""
    datamodule = loaded.datamodule
    dataset = None
    for split in ("test", "val"):
        try:
            dataset = datamodule.dataset(split)
        except (RuntimeError, KeyError):
            continue
        if len(dataset):
            break
    if dataset is None or not len(dataset):
        raise ExportError(f"{loaded.run_dir}: the run's data has no test or validation sample to check the export on")
    batch = default_collate([dataset[i] for i in range(min(n, len(dataset)))])
    first = loaded.modalities[0]
    batch[MASK_KEY][-1, 0] = False
    if isinstance(batch[first], dict):
        for tensor in batch[first].values():
            tensor[-1] = 0
    else:
        batch[first][-1] = 0
    return batch


def export_run(run: str | Path, *, format: str, out: str | Path | None = None, samples: int = 8,
               tolerance: float = TOLERANCE) -> Path:  # fmt: skip
    """Export the run's best checkpoint as ``format`` (``onnx`` | ``torchscript``) into ``out`` (None:
    ``<run>/export/``), check it against PyTorch on ``samples`` real samples and write ``export.json``; returns the
    model file."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    loaded = load_run(run)
    loaded.require_head("mmfw-export")
    model = loaded.model.cpu().eval()
    batch = example_batch(loaded, samples)
    layout = layout_of(batch, loaded.modalities)
    fused = FusedModel(model, layout).eval()
    inputs = flatten(batch, layout)
    out_dir = Path(out) if out is not None else loaded.run_dir / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FORMATS[format]
    with torch.no_grad():
        if format == "onnx":
            export_onnx(fused, inputs, path)
        else:
            torch.jit.save(torch.jit.trace(fused, inputs, check_trace=False), str(path))
        # Checked on the samples it was traced with and on the same samples with every modality present: a branch on
        # the mask that tracing fixed would show in one of them.
        every = {**batch, MASK_KEY: torch.ones_like(batch[MASK_KEY])}
        expected = torch.cat([model(batch), model(every)])
    got = torch.cat([run_exported(path, dict(zip(fused.input_names, flatten(b, layout), strict=True)))
                     for b in (batch, every)])  # fmt: skip
    difference = float((got - expected).abs().max())
    record = {
        "run": str(loaded.run_dir), "checkpoint": str(loaded.checkpoint), "format": format, "file": path.name,
        "inputs": [{"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": ["batch", *t.shape[1:]]}
                   for name, t in zip(fused.input_names, inputs, strict=True)],
        "output": {"name": fused.output_name, "shape": ["batch", int(expected.shape[1])]},
        "objective": type(model.objective).__name__,
        "modalities": loaded.modalities,
        "task": {"kind": loaded.task.kind, "num_outputs": loaded.task.num_outputs,
                 "class_names": loaded.task.class_names},
        "check": {"samples": len(inputs[-1]),
                  "missing": {"sample": len(inputs[-1]) - 1, "modality": loaded.modalities[0]},
                  "also_with_every_modality_present": True, "max_abs_difference": difference, "tolerance": tolerance},
    }  # fmt: skip
    (out_dir / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    if not difference <= tolerance:
        raise ExportError(
            f"the exported {format} model's logits differ from PyTorch's by up to {difference:.3g} (tolerance "
            f"{tolerance:g}) on {len(inputs[-1])} test samples of {loaded.run_dir}; the model holds an operation the "
            f"exporter does not reproduce (try the other format)"
        )
    log.info("exported %s to %s (max |difference| to PyTorch %.2g on %d samples)", format, path, difference,
             len(inputs[-1]))  # fmt: skip
    return path


def export_onnx(fused: FusedModel, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
    """torch.export-based ONNX export (needs ``onnx`` and ``onnxscript``) with a dynamic batch dimension."""
    try:
        import onnxscript  # noqa: F401  (the exporter's dependency: fail with the fix, not deep inside torch)
    except ImportError as err:
        raise ExportError(f"format=onnx needs onnx and onnxscript ({err}): pip install -e '.[export]'") from None
    batch = torch.export.Dim("batch", min=1)
    shapes = {"tensors": tuple({0: batch} for _ in inputs)}
    try:
        torch.onnx.export(fused, inputs, str(path), dynamo=True, verbose=False, input_names=fused.input_names,
                          output_names=[fused.output_name], dynamic_shapes=shapes, external_data=False)  # fmt: skip
    except Exception as err:
        raise ExportError(f"ONNX export failed: {err}") from err


def run_exported(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The exported file's logits on ``inputs`` (by input name, in order): ONNX Runtime for ``.onnx`` (fed the inputs
    its graph kept), ``torch.jit.load`` for TorchScript."""
    if path.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ExportError("checking an ONNX export needs onnxruntime: pip install -e '.[export]'") from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
        return torch.from_numpy(session.run(None, feed)[0])
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(*inputs.values())
