"""New rows through a trained run's preprocessing: the rows of another manifest decoded by the codecs the run fitted
on its training split (tokenizer, tabular statistics) at its settings (image size, audio features), for prediction.

The fitted preprocessing (task, encoder inputs, codec states: tokenizer, tabular statistics) is also saved into the
run folder (``preprocessing.pt``, :func:`save_fitted`), so that a run folder predicts alone once its training data is
moved or deleted.

A new file needs no target or split column. A cell that is empty masks that modality of the row; a column the file
does not have at all masks that modality in every row (with a warning). Rows that cannot be decoded are treated as
in training: ``on_bad_sample: error`` raises :class:`ManifestError` naming the file, row and column; ``skip`` drops
them and lists them.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmfw.data.base import TensorDictDataset
from mmfw.data.manifest.codecs import ManifestFiles, codec_class, make_codecs
from mmfw.data.manifest.reader import ManifestError, RowProblem, read_manifest

if TYPE_CHECKING:
    from mmfw.data.manifest.datamodule import ManifestDataModule

log = logging.getLogger(__name__)

FITTED_KEYS = ("task", "encoder_inputs", "codec_state")  # of the decoded data: what new rows and the model need
_FITTED_VERSION = 1


@dataclass
class NewRows:
    """The decoded rows of a new file.

    Attributes:
        file: the manifest read.
        dataset: the samples, in file order, with the run's modalities (its target is zeros: new rows have none).
        rows: the 1-based data row of each sample (the header not counted), as ``skipped`` and training name them.
        records: each sample's cells as read, for columns a caller copies to its output (an id).
        skipped: the rows dropped as bad (``on_bad_sample: skip``): ``{file, row, column, reason}``.
    """

    file: Path
    dataset: TensorDictDataset
    rows: list[int]
    records: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def decode_new_rows(datamodule: ManifestDataModule, manifest: str | Path, *, on_bad_sample: str) -> NewRows:
    """``manifest``'s rows decoded with ``datamodule``'s fitted codecs (call after its ``setup``); paths in the file are
    relative to the file's folder."""
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be error or skip, got {on_bad_sample!r}")
    path = Path(manifest).expanduser().absolute()
    records = read_manifest(path, encoding=datamodule.encoding)
    columns = {m: datamodule.columns[m] for m in datamodule.modalities}
    _warn_absent_columns(path, records, columns)
    trained = datamodule.files
    files = ManifestFiles(root=path.parent, allow_outside_root=trained.allow_outside_root,
                          missing_file=trained.missing_file)  # fmt: skip
    codecs = make_codecs(columns, settings=datamodule.settings, files=files)
    for kind, codec in codecs.items():
        codec.restore(datamodule.codecs[kind].state())  # the training split's statistics, not this file's
    values: dict[str, list[Any]] = {m: [None] * len(records) for m in columns}
    alive = np.ones(len(records), dtype=bool)
    skipped: list[dict[str, Any]] = []

    def bad(i: int, problem: RowProblem) -> None:
        if on_bad_sample == "error":
            raise ManifestError(problem.reason, file=path, row=i + 1, column=problem.column)
        skipped.append({"file": str(path), "row": i + 1, "column": problem.column, "reason": problem.reason})
        alive[i] = False

    for i, record in enumerate(records):
        try:
            for m, spec in columns.items():
                values[m][i] = codecs[spec["kind"]].decode(record, spec)
        except RowProblem as problem:
            bad(i, problem)
    living = [int(i) for i in np.flatnonzero(alive)]
    for codec in codecs.values():
        for i, problem in codec.bad_rows({m: values[m] for m in codec.specs}, living):
            bad(i, problem)
    living = [int(i) for i in np.flatnonzero(alive)]
    if not living:
        raise ManifestError(f"no row could be read ({len(skipped)} skipped, see the log)", file=path)
    if skipped:
        listed = "; ".join(f"row {s['row']} column {s['column']!r}: {s['reason']}" for s in skipped[:100])
        log.warning("skipped %d bad row(s) of %s (on_bad_sample=skip; rows are 1-based data rows): %s%s",
                    len(skipped), path, listed, "; ..." if len(skipped) > 100 else "")  # fmt: skip
    mask = torch.zeros(len(living), len(columns), dtype=torch.bool)
    inputs: dict[str, Any] = {}
    for j, (m, spec) in enumerate(columns.items()):
        column = [values[m][i] for i in living]
        mask[:, j] = torch.tensor([v is not None for v in column], dtype=torch.bool)
        inputs[m], _ = codecs[spec["kind"]].assemble(m, column)
    views = {m: codecs[s["kind"]].view for m, s in columns.items() if codecs[s["kind"]].view is not None}
    dataset = TensorDictDataset(inputs, mask, torch.zeros(len(living), dtype=torch.long), views)
    return NewRows(path, dataset, [i + 1 for i in living], [records[i] for i in living], skipped)


def _warn_absent_columns(path: Path, records: list[dict[str, Any]], columns: dict[str, dict[str, Any]]) -> None:
    present = set().union(*(r.keys() for r in records))
    for m, spec in columns.items():
        absent = [c for c in codec_class(spec["kind"]).columns(spec) if c not in present]
        if absent:
            log.warning("%s has no column(s) %s of modality %r: read as empty cells in every row (a modality whose "
                        "cells are all empty is masked)", path, absent, m)  # fmt: skip


def save_fitted(path: str | Path, fitted: dict[str, Any]) -> None:
    """``path`` holding ``fitted`` (:data:`FITTED_KEYS`), written atomically: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save({"version": _FITTED_VERSION, **fitted}, tmp)
    os.replace(tmp, path)


def read_fitted(path: str | Path) -> dict[str, Any]:
    """What :func:`save_fitted` wrote (loaded as data only: tensors, strings, numbers)."""
    fitted = torch.load(path, weights_only=True)
    if fitted.get("version") != _FITTED_VERSION:
        raise ValueError(f"{path} holds preprocessing version {fitted.get('version')}, this mmfw reads "
                         f"{_FITTED_VERSION}: delete it to rebuild it from the training data")  # fmt: skip
    return fitted
