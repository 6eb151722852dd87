"""Bring your own data: a datamodule over a manifest (CSV, TSV, JSONL or Parquet), one row per sample.

``columns`` maps modality names to manifest columns, e.g.
``{photo: {kind: image, column: img_path}, voice: {kind: audio, column: wav}, caption: {kind: text, column:
caption}, meta: {kind: tabular, numeric: [age], categorical: [color]}}``. Samples (the batch contract)::

    image    (C, H, W) float in [0, 1]      C = 1 (image_mode L) or 3 (RGB)
    audio    (1, n_mels, num_frames) float  log-mel of the recording resampled to sample_rate
    text     (L,) long                      ids of the configured tokenizer, right-padded with its pad id;
                                            L = max_text_len, or for ngrams the split's longest text
    tabular  {"numeric": (N,) float, "numeric_missing": (N,) bool, "categorical": (C,) long}
    mask     (M,) bool                      False where the cell is empty / NaN (or the file missing, with
                                            missing_file=mask); that modality's tensor is then zeros
    target   () long (multiclass) | () float (binary) | (K,) float (multilabel) | () or (K,) float (regression)

Every configured column is decoded and checked, whichever ``modalities`` a run selects, so a unimodal baseline
and a multimodal run see exactly the same rows. Decoded samples stay in memory and are cached on disk, keyed by
the manifest's content, the referenced files' sizes and times, and every preprocessing setting.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mmfw.data.audio import log_mel_spectrogram, read_wav, resample
from mmfw.data.batch import MASK_KEY, TARGET_KEY, TaskSpec
from mmfw.data.image import load_image, to_float
from mmfw.data.loaders import split_loader
from mmfw.data.tabular import TabularStats, category_key, decimal_value
from mmfw.data.text import (
    ByteTokenizer,
    HFTokenizer,
    NgramTokenizer,
    build_text_tokenizer,
    encode_padded,
    load_pretrained_tokenizer,
    tokenize_padded,
    tokenizer_spec_fingerprint,
)

log = logging.getLogger(__name__)

KINDS = ("image", "audio", "text", "tabular")
TASKS = ("multiclass", "binary", "multilabel", "regression")
SPLITS = ("train", "val", "test")
_CACHE_VERSION = 3  # bump when decoding or the cache layout changes


class ManifestError(ValueError):
    """Bad input: the message names the manifest, the data row (1-based, the header not counted) and the column.

    Attributes: ``file``, ``row`` (1-based data row or None), ``column`` (or None), ``reason``.
    """

    def __init__(self, reason: str, *, file: str | Path, row: int | None = None, column: str | None = None) -> None:
        self.file, self.row, self.column, self.reason = str(file), row, column, reason
        where = [f"manifest {file}"]
        if row is not None:
            where.append(f"data row {row} (1-based, header not counted)")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(", ".join(where) + f": {reason}")


class _RowProblem(Exception):
    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column, self.reason = column, reason


class ManifestDataset(Dataset):
    """In-memory decoded samples of one split (see the module docstring for shapes)."""

    def __init__(self, inputs: dict[str, Any], mask: torch.Tensor, target: torch.Tensor, images: set[str]) -> None:
        self.inputs, self.mask, self.target, self.images = inputs, mask, target, images

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {}
        for name, value in self.inputs.items():
            if isinstance(value, dict):
                sample[name] = {key: tensor[index] for key, tensor in value.items()}
            else:
                sample[name] = to_float(value[index]) if name in self.images else value[index]
        sample[MASK_KEY] = self.mask[index]
        sample[TARGET_KEY] = self.target[index]
        return sample


class ManifestDataModule(pl.LightningDataModule):
    """Any mix of image, audio, text and tabular columns from a manifest file; see ``conf/datamodule/manifest.yaml``.

    Args:
        manifest: CSV/TSV, JSONL or Parquet file; relative paths in it are relative to its folder.
        encoding: text encoding of a CSV/TSV or JSONL manifest (``utf-8``; ``latin-1``, ``cp1252``, ...).
        modalities: the configured modalities this run uses, in mask-column order; None: every one of ``columns``.
        columns: ``{modality: {kind: image|audio|text, column: name}}`` or ``{modality: {kind: tabular,
            numeric: [names], categorical: [names]}}``.
        target: label column (a list of columns for multi-output regression).
        task: ``multiclass``, ``binary``, ``multilabel`` or ``regression``; None infers it (a list → multilabel,
            non-integer numbers → regression, two values → binary, else multiclass).
        label_delimiter: separates labels of a multilabel target given as a string (``cat|dog``).
        split_column: column with ``train``/``val``/``test``; when absent (or None) a seeded split is drawn.
        val_fraction: share of rows for validation in the seeded split.
        test_fraction: share of rows for test in the seeded split.
        split_seed: seed of the seeded split (stratified by label for classification); fixed by default, so that
            runs with different ``seed`` see one split.
        seed: seed of the training batches' shuffling order.
        image_mode: ``L`` or ``RGB``; every image is converted to it.
        image_size: side of the square output image, or ``[H, W]``.
        sample_rate: audio is resampled to this rate.
        n_mels: mel bands.
        n_fft: STFT window in samples.
        hop_length: STFT hop in samples.
        num_frames: spectrogram frames (centre-cropped or padded): ``(num_frames - 1) * hop_length`` samples.
        text_tokenizer: ``ngrams`` (hashed word and character n-grams, for the ``ngram`` encoder), ``bytes``, ``bpe``
            (trained on the training split's text) or ``hf:<model folder or package>``.
        max_text_len: token ids per text, padded or truncated (``bytes``, ``bpe``, ``hf:``).
        bpe_vocab_size: vocabulary size of the ``bpe`` tokenizer.
        max_ngrams: ``ngrams`` only: n-gram ids per text at most (a safety cap; each split is padded to its
            longest text).
        ngram_buckets: ``ngrams`` only: hash buckets (the encoder's embedding rows).
        ngram_unique: ``ngrams`` only: each distinct n-gram once per text (a binary bag) rather than as often as
            it occurs.
        missing_file: ``error``: a referenced file that does not exist is bad input; ``mask``: it masks that
            modality of the sample.
        on_bad_sample: ``error`` raises :class:`ManifestError` at the first bad row; ``skip`` drops bad rows, logs
            them and lists them in ``.skipped``.
        allow_outside_root: allow paths that leave the manifest's folder (``../x.png``, absolute paths elsewhere).
        cache_dir: folder for decoded samples; None keeps them in memory only.
        batch_size: per-device batch size.
        num_workers: dataloader worker processes.
        pin_memory: pin batches in page-locked memory.
    """

    def __init__(
        self,
        *,
        manifest: str,
        encoding: str = "utf-8",
        modalities: Sequence[str] | None,
        columns: Mapping[str, Mapping[str, Any]],
        target: str | Sequence[str],
        task: str | None = None,
        label_delimiter: str = "|",
        split_column: str | None = "split",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        image_mode: str = "RGB",
        image_size: int | Sequence[int] = 64,
        sample_rate: int = 16000,
        n_mels: int = 64,
        n_fft: int = 400,
        hop_length: int = 160,
        num_frames: int = 101,
        text_tokenizer: str = "ngrams",
        max_text_len: int = 64,
        bpe_vocab_size: int = 2000,
        max_ngrams: int = 65536,
        ngram_buckets: int = 2**18,
        ngram_unique: bool = True,
        missing_file: str = "error",
        on_bad_sample: str = "error",
        allow_outside_root: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.manifest = Path(os.path.normpath(Path(manifest).expanduser().absolute()))
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"datamodule.encoding={encoding!r} is not a known text encoding (utf-8, latin-1, "
                             "cp1252, ...)") from None  # fmt: skip
        self.encoding = encoding
        self.columns = _check_columns(_plain(columns))
        self.modalities = list(self.columns) if modalities is None else list(_plain(modalities))
        unknown = [m for m in self.modalities if m not in self.columns]
        if unknown or not self.modalities:
            raise ValueError(
                f"modalities={self.modalities} names {unknown or 'nothing'}, but datamodule.columns configures "
                f"{sorted(self.columns)}: set `modalities` to some of those (or add columns for the others)"
            )
        self.target = [target] if isinstance(target, str) else list(_plain(target))
        _choice("task", task, (*TASKS, None))
        if len(self.target) > 1 and task not in (None, "regression"):
            raise ValueError(f"a list of target columns means multi-output regression; datamodule.task is {task!r}")
        _choice("image_mode", image_mode, ("L", "RGB"))
        _choice("missing_file", missing_file, ("error", "mask"))
        _choice("on_bad_sample", on_bad_sample, ("error", "skip"))
        if not (
            text_tokenizer in ("ngrams", "bytes", "bpe") or (text_tokenizer.startswith("hf:") and text_tokenizer[3:])
        ):
            raise ValueError(
                f"datamodule.text_tokenizer must be ngrams, bytes, bpe or hf:<path>, got {text_tokenizer!r}"
            )
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError("datamodule.val_fraction and test_fraction must be in [0, 1) with a sum below 1")
        size = [int(image_size)] * 2 if isinstance(image_size, int) else [int(s) for s in _plain(image_size)]
        self.task_kind, self.label_delimiter, self.split_column = task, label_delimiter, split_column
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed, self.seed = int(split_seed), int(seed)
        self.image_mode, self.image_size = image_mode, (size[0], size[1])
        self.audio = dict(sample_rate=sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                          num_frames=num_frames)  # fmt: skip
        self.text_tokenizer_spec, self.max_text_len, self.bpe_vocab_size = text_tokenizer, max_text_len, bpe_vocab_size
        self.ngram_buckets, self.ngram_unique = int(ngram_buckets), bool(ngram_unique)
        # the ids per text of the chosen tokenizer: the cut that is counted in `truncated`
        self.text_len = int(max_ngrams) if text_tokenizer == "ngrams" else int(max_text_len)
        self.missing_file, self.on_bad_sample, self.allow_outside_root = missing_file, on_bad_sample, allow_outside_root
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        # Everything that changes the decoded samples keys the disk cache (modalities does not: all are decoded).
        self._settings = {
            "encoding": encoding, "columns": self.columns, "target": self.target, "task": task,
            "label_delimiter": label_delimiter, "split_column": split_column, "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction, "split_seed": self.split_seed, "image_mode": image_mode,
            "image_size": self.image_size, "audio": self.audio, "text_tokenizer": text_tokenizer,
            "max_text_len": max_text_len, "bpe_vocab_size": bpe_vocab_size, "max_ngrams": max_ngrams,
            "ngram_buckets": self.ngram_buckets, "ngram_unique": self.ngram_unique, "missing_file": missing_file,
            "on_bad_sample": on_bad_sample, "allow_outside_root": allow_outside_root,
        }  # fmt: skip
        self.skipped: list[dict[str, Any]] = []
        self.truncated: dict[str, int] = {}
        self.text_tokenizer: ByteTokenizer | HFTokenizer | NgramTokenizer | None = None
        self.tabular_stats: dict[str, TabularStats] = {}
        self.split_rows: dict[str, list[int]] = {}
        self._data: dict[str, Any] | None = None
        self._task: TaskSpec | None = None

    # ------------------------------------------------------------------ what the model needs to know
    @property
    def task(self) -> TaskSpec:
        """The task, with its number of outputs and class names, as found in the training split."""
        if self._task is None:
            raise RuntimeError("ManifestDataModule.task is known after prepare_data()/setup()")
        return self._task

    @property
    def encoder_inputs(self) -> dict[str, dict[str, Any]]:
        """Per selected modality, the data-dependent keyword arguments of its encoder."""
        if self._data is None:
            raise RuntimeError("ManifestDataModule.encoder_inputs is known after prepare_data()/setup()")
        return {m: dict(self._data["encoder_inputs"][m]) for m in self.modalities}

    # ------------------------------------------------------------------ lightning
    def prepare_data(self) -> None:
        """Decode everything once (or load it from the cache); other processes then hit the disk cache."""
        self._load_or_build()

    def setup(self, stage: str | None = None) -> None:
        self._load_or_build()

    def dataset(self, split: str) -> ManifestDataset:
        """The samples of ``split`` with the selected modalities only."""
        if self._data is None:
            raise RuntimeError(f"call setup() before asking for the {split} data")
        part = self._data["splits"][split]
        index = [self._data["modalities"].index(m) for m in self.modalities]
        images = {m for m in self.modalities if self.columns[m]["kind"] == "image"}
        inputs = {m: part["inputs"][m] for m in self.modalities}
        return ManifestDataset(inputs, part["mask"][:, index].contiguous(), part["target"], images)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return split_loader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def write_splits(self, path: Path) -> None:
        """``path`` as CSV ``row,split``: each manifest data row (1-based, header not counted) and its split;
        rows dropped as bad (``on_bad_sample: skip``) are ``skipped``."""
        table = [(row, split) for split in SPLITS for row in self.split_rows[split]]
        table += [(s["row"], "skipped") for s in self.skipped]
        with Path(path).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "split"])
            writer.writerows(sorted(table))

    def raw_texts(self, split: str, modality: str) -> list[str]:
        """The raw strings of text ``modality`` in ``split``, in dataset order ("" where missing)."""
        if self.columns[modality]["kind"] != "text":
            raise ValueError(f"modality {modality!r} is {self.columns[modality]['kind']}, not text")
        records = read_manifest(self.manifest, encoding=self.encoding)
        column = self.columns[modality]["column"]
        values = (records[row - 1].get(column) for row in self.split_rows[split])
        return ["" if _is_missing(v) else str(v) for v in values]

    # ------------------------------------------------------------------ robustness hook (mmfw.robustness)
    @property
    def modality_kinds(self) -> dict[str, str]:
        """``{modality: kind}`` of the selected modalities (``image``, ``audio``, ``text`` or ``tabular``)."""
        return {m: self.columns[m]["kind"] for m in self.modalities}

    def corrupted_dataloader(self, split: str, modality: str, corrupt: Callable[..., Any]) -> DataLoader:
        """``split``'s samples, in order, with ``modality`` decoded again from the manifest through ``corrupt``.

        audio: ``corrupt(wave, *, sample_rate, signal_power, index) -> wave`` on the resampled waveform
        (``signal_power``: its mean power) before the log-mel; text: ``corrupt(text, *, index) -> text`` before
        tokenizing (a text left blank is missing: mask bit False). ``index`` is the position in the split.
        """
        kind = self.modality_kinds.get(modality)
        if kind not in ("audio", "text"):
            raise ValueError(f"only audio and text modalities are decoded again; {modality!r} is {kind or 'unknown'}")
        base = self.dataset(split)
        j = self.modalities.index(modality)
        records = read_manifest(self.manifest, encoding=self.encoding)
        values = [records[row - 1].get(self.columns[modality]["column"]) for row in self.split_rows[split]]
        present = base.mask[:, j].clone()
        if kind == "text":
            texts = [corrupt(str(v), index=i) if present[i] else "" for i, v in enumerate(values)]
            present &= torch.tensor([not _is_missing(t) for t in texts], dtype=torch.bool)
            ids = encode_padded(self.text_tokenizer, texts, self.text_len)
            ids[~present.numpy()] = self.text_tokenizer.pad_id
            decoded = torch.from_numpy(ids)
        else:
            decoded = torch.zeros_like(base.inputs[modality])
            for i in np.flatnonzero(present.numpy()):
                wave, rate = read_wav(self._path(str(values[i])))
                wave = resample(wave, rate, self.audio["sample_rate"])
                power = float(np.mean(np.square(wave, dtype=np.float64)))
                wave = corrupt(wave, sample_rate=self.audio["sample_rate"], signal_power=power, index=int(i))
                decoded[i, 0] = torch.from_numpy(log_mel_spectrogram(wave, **self.audio))
        mask = base.mask.clone()
        mask[:, j] = present
        dataset = ManifestDataset({**base.inputs, modality: decoded}, mask, base.target, base.images)
        return split_loader(
            dataset, batch_size=self.batch_size, shuffle=False, seed=self.seed, num_workers=self.num_workers
        )

    # ------------------------------------------------------------------ cache
    def _load_or_build(self) -> None:
        if self._data is not None:
            return
        records = read_manifest(self.manifest, encoding=self.encoding)
        self._check_header(records)
        key = self._cache_key(records)
        path = self.cache_dir / f"{self.manifest.stem}-{key}.pt" if self.cache_dir else None
        data = None
        if path is not None and path.is_file():
            try:
                data = torch.load(path, weights_only=True)
                log.info("manifest cache hit: %s", path)
            except Exception as err:  # a damaged cache is rebuilt, never trusted
                log.warning("ignoring unreadable manifest cache %s (%s); decoding again", path, err)
        if data is None:
            data = self._build(records)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                torch.save(data, tmp)
                os.replace(tmp, path)  # atomic: concurrent runs never read a half-written file
        self._adopt(data)

    def _cache_key(self, records: list[dict[str, Any]]) -> str:
        files = []
        for name, spec in self.columns.items():
            if spec["kind"] in ("image", "audio"):
                for value in (r.get(spec["column"]) for r in records):
                    path = None if _is_missing(value) else self._path(str(value), check=False)
                    stat = path.stat() if path is not None and path.is_file() else None
                    files.append(None if stat is None else [str(path), stat.st_size, stat.st_mtime_ns])
        tokenizer = tokenizer_spec_fingerprint(self.text_tokenizer_spec) if self._has_text() else None
        blob = json.dumps(
            [_CACHE_VERSION, _sha256(self.manifest), self._settings, tokenizer, files], default=str, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _adopt(self, data: dict[str, Any]) -> None:
        self._data = data
        task = data["task"]
        self._task = TaskSpec(task["kind"], int(task["num_outputs"]), task["class_names"])
        self.skipped = [dict(s) for s in data["skipped"]]
        self.split_rows = {s: data["splits"][s]["rows"].tolist() for s in SPLITS}
        self.tabular_stats = {m: TabularStats(**s) for m, s in data["tabular_stats"].items()}
        if self._has_text():
            self.text_tokenizer = _tokenizer_from_cache(
                self.text_tokenizer_spec,
                data["tokenizer"],
                NgramTokenizer(buckets=self.ngram_buckets, unique=self.ngram_unique),
            )
        if self.skipped:
            listed = "; ".join(f"row {s['row']} column {s['column']!r}: {s['reason']}" for s in self.skipped[:100])
            more = f"; ... and {len(self.skipped) - 100} more" if len(self.skipped) > 100 else ""
            log.warning(
                "skipped %d bad row(s) of %s (on_bad_sample=skip; rows are 1-based data rows): %s%s",
                len(self.skipped), self.manifest, listed, more,
            )  # fmt: skip
        self.truncated = {m: count["truncated"] for m, count in data["truncated"].items()}
        for m, count in data["truncated"].items():
            log.log(
                logging.WARNING if count["truncated"] else logging.INFO,
                "text column %r (modality %r): %d of %d texts had more than %s=%d tokens and were cut",
                self.columns[m]["column"], m, count["truncated"], count["texts"],
                "max_ngrams" if self.text_tokenizer_spec == "ngrams" else "max_text_len", self.text_len,
            )  # fmt: skip
        sizes = {s: len(data["splits"][s]["target"]) for s in SPLITS}
        log.info("manifest %s: %s samples, task %s", self.manifest, sizes, self._task)

    # ------------------------------------------------------------------ building
    def _has_text(self) -> bool:
        return any(spec["kind"] == "text" for spec in self.columns.values())

    def _check_header(self, records: list[dict[str, Any]]) -> None:
        present = set().union(*(r.keys() for r in records))
        for name, spec in self.columns.items():
            for column in _spec_columns(spec):
                if column not in present:
                    raise ManifestError(
                        f"column {column!r} named in datamodule.columns.{name} is not in the file; "
                        f"its columns are {sorted(present)}",
                        file=self.manifest, column=column,
                    )  # fmt: skip
        for column in self.target:
            if column not in present:
                raise ManifestError(
                    f"target column {column!r} (datamodule.target) is not in the file; its columns are "
                    f"{sorted(present)}",
                    file=self.manifest, column=column,
                )  # fmt: skip

    def _path(self, value: str, *, check: bool = True) -> Path:
        """The file ``value`` names; with ``check``, refuse it unless it lies in the manifest's folder, both as
        written (``../``, absolute paths) and once symbolic links are followed."""
        root = self.manifest.parent
        path = Path(os.path.normpath(root / Path(value).expanduser()))
        if not check or self.allow_outside_root:
            return path
        fix = "move the file under it or set datamodule.allow_outside_root=true"
        if not path.is_relative_to(root):
            raise ValueError(f"path {value!r} leaves the manifest folder {root}; {fix}")
        real = path.resolve()
        if not real.is_relative_to(root.resolve()):
            raise ValueError(
                f"path {value!r} leaves the manifest folder {root} through a symbolic link (it resolves to {real}); "
                f"{fix}"
            )
        return path

    def _build(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(records)
        alive = np.ones(n, dtype=bool)
        skipped: list[dict[str, Any]] = []

        def bad(i: int, problem: _RowProblem) -> None:
            if self.on_bad_sample == "error":
                raise ManifestError(problem.reason, file=self.manifest, row=i + 1, column=problem.column)
            skipped.append({"file": str(self.manifest), "row": i + 1, "column": problem.column,
                            "reason": problem.reason})  # fmt: skip
            alive[i] = False

        names = list(self.columns)
        values: dict[str, list[Any]] = {m: [None] * n for m in names}  # decoded value per row (None = missing)
        raw_targets: list[Any] = [None] * n
        splits: list[str | None] = [None] * n
        use_split_column = self.split_column is not None and any(self.split_column in r for r in records)
        log.info("decoding %d rows of %s (cached afterwards)", n, self.manifest)
        for i, record in enumerate(records):
            try:
                raw_targets[i] = self._raw_target(record)
                if use_split_column:
                    splits[i] = _split_value(record.get(self.split_column), self.split_column)
                for m in names:
                    values[m][i] = self._decode(record, self.columns[m])
            except _RowProblem as problem:
                bad(i, problem)

        kind = self.task_kind or _infer_task([t for t, a in zip(raw_targets, alive, strict=True) if a], self.target)
        if self.task_kind is None:
            log.info("task inferred as %s from column(s) %s; set datamodule.task to override", kind, self.target)
        targets: list[Any] = [None] * n
        for i in np.flatnonzero(alive):
            try:
                targets[i] = _parse_target(raw_targets[i], kind, self.target, self.label_delimiter)
            except _RowProblem as problem:
                bad(i, problem)

        if kind != "regression":
            column = ", ".join(self.target)
            cells = (x for i in np.flatnonzero(alive) for x in _label_cells(raw_targets[i], kind, self.label_delimiter,
                                                                              column))  # fmt: skip
            _note_merged_spellings(column, "class", cells)
        for spec in self.columns.values():
            for column in spec["categorical"] if spec["kind"] == "tabular" else []:
                cells = (records[i].get(column) for i in np.flatnonzero(alive))
                _note_merged_spellings(column, "category", (x for x in cells if not _is_missing(x)))

        if not use_split_column:
            rows = np.flatnonzero(alive)
            strata = None if kind == "regression" else [json.dumps(targets[i]) for i in rows]
            drawn = seeded_split(len(rows), strata, self.val_fraction, self.test_fraction, self.split_seed)
            for i, split in zip(rows, drawn, strict=True):
                splits[i] = split
        train = [i for i in np.flatnonzero(alive) if splits[i] == "train"]
        if not train:
            raise ManifestError("the training split is empty", file=self.manifest, column=self.split_column)

        task, encode_target = self._task_from_train(kind, [targets[i] for i in train])
        encoded: list[Any] = [None] * n
        for i in np.flatnonzero(alive):
            try:
                encoded[i] = encode_target(targets[i])
            except _RowProblem as problem:
                bad(i, problem)  # a val/test label the training split never has
        train = [i for i in train if alive[i]]

        tokenizer, stats = self._fit_train_statistics(values, train)
        for i, problem in self._overflowing_standardisation(values, np.flatnonzero(alive), stats):
            bad(i, problem)  # a val/test value many training stds away (train values stay within sqrt(n) stds)
        out_splits = {}
        for split in SPLITS:
            rows = [i for i in np.flatnonzero(alive) if splits[i] == split]
            out_splits[split] = self._assemble(rows, values, [encoded[i] for i in rows], task, tokenizer, stats)
        truncated: dict[str, dict[str, int]] = {}  # per text modality, over all splits
        for part in out_splits.values():
            for m, count in part.pop("truncated").items():
                total = truncated.setdefault(m, {"truncated": 0, "texts": 0})
                total["truncated"] += count["truncated"]
                total["texts"] += count["texts"]
        return {
            "modalities": names,
            "splits": out_splits,
            "task": {"kind": task.kind, "num_outputs": task.num_outputs, "class_names": task.class_names},
            "encoder_inputs": self._encoder_inputs(tokenizer, stats, out_splits["train"]),
            "skipped": sorted(skipped, key=lambda s: s["row"]),
            "truncated": truncated,
            "tabular_stats": {m: vars(s) for m, s in stats.items()},
            # only a trained BPE needs saving; the others are rebuilt from the spec (the key covers their files)
            "tokenizer": tokenizer.to_str() if self.text_tokenizer_spec == "bpe" else None,
        }

    def _overflowing_standardisation(
        self, values: dict[str, list[Any]], rows: Sequence[int], stats: dict[str, TabularStats]
    ) -> list[tuple[int, _RowProblem]]:
        """Rows whose standardised numeric value ``(x - mean) / std`` does not fit the float32 the model takes."""
        found = []
        for m, spec in self.columns.items():
            if spec["kind"] != "tabular" or not spec["numeric"]:
                continue
            present = [i for i in rows if values[m][i] is not None]
            x = np.array([values[m][i][0] for i in present], dtype=np.float64)
            x = x.reshape(len(present), len(spec["numeric"]))
            mean, std = np.asarray(stats[m].mean), np.asarray(stats[m].std)
            z = (x - mean) / std
            for k, j in zip(*np.nonzero(np.abs(z) > FLOAT32_MAX), strict=True):  # a missing value (NaN) is not
                reason = (f"the value {x[k, j]:.6g} standardises to {z[k, j]:.3g} (training mean {mean[j]:.6g}, std "
                          f"{std[j]:.6g}), beyond the float32 range the model computes in; fix the value or rescale "
                          "the column (e.g. take its log)")  # fmt: skip
                found.append((present[k], _RowProblem(spec["numeric"][j], reason)))
        return sorted(found, key=lambda f: f[0])

    def _raw_target(self, record: dict[str, Any]) -> Any:
        values = [record.get(c) for c in self.target]
        for column, value in zip(self.target, values, strict=True):
            if _is_missing(value):
                raise _RowProblem(column, "the target is missing (empty cell or NaN); every row needs one")
        return values if len(values) > 1 else values[0]

    def _decode(self, record: dict[str, Any], spec: dict[str, Any]) -> Any:
        """The decoded value of one modality of one row, or None when missing."""
        if spec["kind"] == "tabular":
            numeric = []
            for column in spec["numeric"]:
                value = record.get(column)
                numeric.append(math.nan if _is_missing(value) else _feature_number(value, column, "numeric column"))
            categorical = [None if _is_missing(record.get(c)) else category_key(_scalar(record.get(c), c))
                           for c in spec["categorical"]]  # fmt: skip
            if all(math.isnan(x) for x in numeric) and all(c is None for c in categorical):
                return None
            return numeric, categorical
        column = spec["column"]
        value = record.get(column)
        if _is_missing(value):
            return None
        value = _scalar(value, column)
        if spec["kind"] == "text":
            return str(value)
        try:
            path = self._path(str(value))
        except ValueError as err:
            raise _RowProblem(column, str(err)) from None
        if not path.is_file():
            if self.missing_file == "mask":
                return None
            raise _RowProblem(column, f"file not found: {path} (set datamodule.missing_file=mask to mask it)")
        try:
            if spec["kind"] == "image":
                return load_image(path, mode=self.image_mode, size=self.image_size)
            wave, rate = read_wav(path)
            wave = resample(wave, rate, self.audio["sample_rate"])
            return log_mel_spectrogram(wave, **self.audio)[None]
        except ValueError as err:
            raise _RowProblem(column, str(err)) from None  # the decoders' messages name the file

    def _task_from_train(self, kind: str, train_targets: list[Any]) -> tuple[TaskSpec, Any]:
        column = ", ".join(self.target)
        if kind == "regression":
            return TaskSpec("regression", len(self.target), None), lambda t: t
        labels = {x for t in train_targets for x in (t if kind == "multilabel" else [t])}
        names = sorted(labels, key=_label_order)
        if kind == "binary" and len(names) != 2:
            raise ManifestError(
                f"a binary task needs exactly two labels in the training split, found {names}; "
                "set datamodule.task=multiclass (or fix the labels)",
                file=self.manifest, column=column,
            )  # fmt: skip
        if kind == "multiclass" and len(names) < 2:
            raise ManifestError(f"the training split has only the label(s) {names}", file=self.manifest, column=column)
        index = {name: i for i, name in enumerate(names)}

        def encode(target: Any) -> Any:
            for label in target if kind == "multilabel" else [target]:
                if label not in index:
                    raise _RowProblem(column, f"label {label!r} never occurs in the training split ({names})")
            if kind == "multilabel":
                hot = [0.0] * len(names)
                for label in target:
                    hot[index[label]] = 1.0
                return hot
            return index[target]

        return TaskSpec(kind, 1 if kind == "binary" else len(names), names), encode

    def _fit_train_statistics(self, values: dict[str, list[Any]], train: list[int]) -> tuple[Any, dict]:
        tokenizer = None
        if self._has_text():
            texts = [values[m][i] for m, s in self.columns.items() if s["kind"] == "text" for i in train]
            tokenizer = build_text_tokenizer(
                self.text_tokenizer_spec,
                [t for t in texts if t is not None],
                bpe_vocab_size=self.bpe_vocab_size,
                max_len=self.text_len,
                ngram_buckets=self.ngram_buckets,
                ngram_unique=self.ngram_unique,
            )
        stats = {}
        for m, spec in self.columns.items():
            if spec["kind"] == "tabular":
                rows = [values[m][i] for i in train if values[m][i] is not None]
                numeric = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(rows), len(spec["numeric"]))
                stats[m] = TabularStats.fit(numeric, [r[1] for r in rows], numeric=spec["numeric"],
                                            categorical=spec["categorical"])  # fmt: skip
        return tokenizer, stats

    def _assemble(self, rows: list[int], values, targets, task: TaskSpec, tokenizer, stats) -> dict[str, Any]:  # noqa: ANN001
        n = len(rows)
        mask = torch.zeros(n, len(self.columns), dtype=torch.bool)
        inputs: dict[str, Any] = {}
        truncated: dict[str, dict[str, int]] = {}  # per text modality: texts cut to max_text_len, texts present
        for j, (m, spec) in enumerate(self.columns.items()):
            column = [values[m][i] for i in rows]
            present = [v is not None for v in column]
            mask[:, j] = torch.tensor(present, dtype=torch.bool)
            if spec["kind"] == "text":
                ids, cut = tokenize_padded(tokenizer, [v or "" for v in column], self.text_len)
                ids[~np.asarray(present, dtype=bool)] = tokenizer.pad_id  # a missing text is all padding
                inputs[m] = torch.from_numpy(ids)
                truncated[m] = {"truncated": int(cut[present].sum()), "texts": int(sum(present))}
            elif spec["kind"] == "tabular":
                blank = (np.full(len(spec["numeric"]), np.nan), [None] * len(spec["categorical"]))
                filled = [v if v is not None else blank for v in column]
                numeric = np.array([v[0] for v in filled], dtype=np.float64).reshape(n, len(spec["numeric"]))
                encoded = stats[m].encode(numeric, [v[1] for v in filled])
                encoded["numeric_missing"][~np.asarray(present, dtype=bool)] = False  # masked as a whole instead
                inputs[m] = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in encoded.items()}
            else:
                shape = (
                    (1, self.audio["n_mels"], self.audio["num_frames"])
                    if spec["kind"] == "audio"
                    else (1 if self.image_mode == "L" else 3, *self.image_size)
                )
                dtype = np.float32 if spec["kind"] == "audio" else np.uint8
                array = np.zeros((n, *shape), dtype=dtype)
                for k, v in enumerate(column):
                    if v is not None:
                        array[k] = v
                inputs[m] = torch.from_numpy(array)
        if task.kind == "multiclass":
            target = torch.tensor(targets, dtype=torch.long)
        else:
            target = torch.tensor(targets, dtype=torch.float32)
            if task.kind == "multilabel" or task.num_outputs > 1:
                target = target.reshape(n, task.num_outputs)
        rows_tensor = torch.tensor([i + 1 for i in rows])
        return {"inputs": inputs, "mask": mask, "target": target, "rows": rows_tensor, "truncated": truncated}

    def _encoder_inputs(self, tokenizer, stats: dict[str, TabularStats], train: dict) -> dict[str, dict[str, Any]]:  # noqa: ANN001
        out: dict[str, dict[str, Any]] = {}
        for m, spec in self.columns.items():
            if spec["kind"] == "image":
                out[m] = {"in_chans": 1 if self.image_mode == "L" else 3}
            elif spec["kind"] == "audio":
                out[m] = {"in_chans": 1}
            elif spec["kind"] == "text":
                out[m] = {"vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id}
                if isinstance(tokenizer, NgramTokenizer):  # the n-gram bag's IDF / min_df (encoders.ngram_text)
                    out[m].update(ngram_document_frequencies(train["inputs"][m], tokenizer))
            else:
                out[m] = {"num_numeric": len(spec["numeric"]), "cardinalities": stats[m].cardinalities}
        return out


# ---------------------------------------------------------------------------------------------- helpers
def ngram_document_frequencies(ids: torch.Tensor, tokenizer: NgramTokenizer) -> dict[str, Any]:
    """``doc_freq`` (training texts holding each bucket, ``(vocab_size,)`` int32) and ``num_texts`` (training texts
    with at least one n-gram) from the training split's padded ids ``(N, L)``."""
    present = ids != tokenizer.pad_id
    rows = torch.arange(ids.shape[0]).unsqueeze(1).expand_as(ids)[present]
    pairs = torch.unique(torch.stack([rows, ids[present]]), dim=1)  # each (text, bucket) once
    doc_freq = torch.bincount(pairs[1], minlength=tokenizer.vocab_size).to(torch.int32)
    return {"doc_freq": doc_freq, "num_texts": int(present.any(dim=1).sum())}


def read_manifest(path: Path, *, encoding: str = "utf-8") -> list[dict[str, Any]]:
    """Rows of a CSV/TSV (all cells as strings), JSONL or Parquet manifest as dicts; missing cells are None/NaN.

    Text files are decoded with ``encoding`` (a UTF-8 byte-order mark is dropped). A repeated column name is an
    error rather than the first (CSV) or last (JSON) occurrence winning without a word.
    """
    if not path.is_file():
        raise ManifestError("manifest file not found; set datamodule.manifest to a CSV, JSONL or Parquet file",
                            file=path)  # fmt: skip
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        records = _read_csv(path, "\t" if suffix == ".tsv" else ",", encoding)
    elif suffix in (".jsonl", ".ndjson"):
        records = _read_jsonl(path, encoding)
    elif suffix in (".parquet", ".pq"):
        records = _read_parquet(path)
    else:
        raise ManifestError("unknown manifest format: use .csv, .tsv, .jsonl or .parquet", file=path)
    if not records:
        raise ManifestError("the manifest has no rows", file=path)
    return records


def _read_csv(path: Path, sep: str, encoding: str) -> list[dict[str, Any]]:
    data, bom = _without_bom(path.read_bytes(), encoding)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        # Parse the text with the bad bytes kept as lone surrogates to tell the data row and column they are in.
        lines = csv.reader(io.StringIO(data.decode(encoding, errors="surrogateescape")), delimiter=sep)
        header = next(lines, [])
        row, column = None, next((c for c in header if _BAD_CHAR.search(c)), None)
        for i, cells in enumerate(lines if column is None else []):
            bad = [c for c, v in zip(header, cells, strict=False) if _BAD_CHAR.search(v)]
            if bad or any(_BAD_CHAR.search(v) for v in cells):
                row, column = i + 1, bad[0] if bad else None
                break
        raise _decode_error(path, data, err, encoding, bom=bom, row=row, column=column) from None
    header = next(csv.reader(io.StringIO(text), delimiter=sep), [])
    _check_unique(path, header)
    return _parse_csv(path, text, sep).to_dict("records")


def _parse_csv(path: Path, text: str, sep: str) -> pd.DataFrame:
    try:  # Only an empty cell or NaN is missing: "NA", "None", "null" stay values (a category may be "NA").
        return pd.read_csv(io.StringIO(text), dtype=str, sep=sep, keep_default_na=False,
                           na_values=["nan", "NaN", "NAN"])  # fmt: skip
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"cannot parse the file: {err}", file=path) from err


def _read_jsonl(path: Path, encoding: str) -> list[dict[str, Any]]:
    data, bom = _without_bom(path.read_bytes(), encoding)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        start = data.rfind(b"\n", 0, err.start) + 1  # the line holding the bad byte
        end = data.find(b"\n", err.start)
        line = data[start : end if end >= 0 else len(data)]
        try:
            cells = json.loads(line.decode(encoding, errors="surrogateescape"))
        except json.JSONDecodeError:
            cells = None
        bad = (str(k) for k, v in cells.items() if _BAD_CHAR.search(f"{k}{v}")) if isinstance(cells, dict) else ()
        row = sum(1 for x in data[:start].split(b"\n") if x.strip()) + 1
        raise _decode_error(path, data, err, encoding, bom=bom, row=row, column=next(bad, None)) from None
    records: list[dict[str, Any]] = []
    for line in text.split("\n"):  # not str.splitlines: a JSON string may hold a raw U+2028
        if not line.strip():
            continue
        row = len(records) + 1
        try:
            record = json.loads(line, object_pairs_hook=_unique_pairs)
        except _RepeatedKey as repeated:
            raise ManifestError(
                f"the key {repeated.key!r} appears twice in this JSON object (JSON keeps only the last one); "
                "remove or rename one",
                file=path, row=row, column=repeated.key,
            ) from None  # fmt: skip
        except json.JSONDecodeError as err:
            raise ManifestError(f"invalid JSON: {err}", file=path, row=row) from err
        if not isinstance(record, dict):
            raise ManifestError("each line must be a JSON object", file=path, row=row)
        records.append(record)
    return records


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        _check_unique(path, pq.read_schema(path).names)
        frame = pd.read_parquet(path)
    except (pa.ArrowException, OSError) as err:
        raise ManifestError(f"cannot read the Parquet file: {err}", file=path) from err
    return [{k: _native(v) for k, v in r.items()} for r in frame.to_dict("records")]


_BAD_CHAR = re.compile("[\udc80-\udcff]")  # an undecodable byte under errors="surrogateescape"


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _check_unique(path: Path, names: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name.strip():
            continue  # an unnamed column (a spreadsheet's trailing separators): pandas numbers those, none is used
        if name in seen:
            raise ManifestError(
                f"duplicate column name {name!r} in the header (columns {seen[name]} and {position}, 1-based); "
                "rename one so every column has its own name",
                file=path, column=name,
            )  # fmt: skip
        seen[name] = position


def _without_bom(data: bytes, encoding: str) -> tuple[bytes, int]:
    """``data`` without a UTF-8 byte-order mark (when reading UTF-8), and the number of bytes dropped."""
    if codecs.lookup(encoding).name == "utf-8" and data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
    return data, 0


def _decode_error(path: Path, data: bytes, err: UnicodeDecodeError, encoding: str, *, bom: int, row: int | None,
                  column: str | None) -> ManifestError:  # fmt: skip
    """``err``, raised decoding ``data`` (the file after a ``bom``-byte mark), naming the line and byte offset."""
    line = data.count(b"\n", 0, err.start) + 1
    return ManifestError(
        f"not valid {encoding} text: byte {data[err.start : err.start + 1]!r} at line {line}, byte offset "
        f"{bom + err.start} ({err.reason}); re-save the file as UTF-8, or set datamodule.encoding to the encoding it "
        "was written in (e.g. latin-1 or cp1252)",
        file=path, row=row, column=column,
    )  # fmt: skip


def seeded_split(
    n: int, strata: Sequence[str] | None, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Assign ``n`` rows to train/val/test: ``round(n * fraction)`` rows each for val and test.

    Stratified: each stratum (label) is shuffled, its rows get evenly spaced ranks ``(k + u_s) / n_s``, and
    val/test take the lowest ranks over all strata, so every stratum is split in proportion; the last row of
    each stratum stays in training so that every label is seen in training.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(strata if strata is not None else [""] * n):
        groups.setdefault(key, []).append(i)
    rank = np.zeros(n)
    keep = np.zeros(n, dtype=bool)
    for key in sorted(groups):
        order = rng.permutation(groups[key])
        rank[order] = (np.arange(len(order)) + rng.random()) / len(order)
        if strata is not None:
            keep[order[-1]] = True
    candidates = [i for i in np.argsort(rank, kind="stable") if not keep[i]]
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    out = ["train"] * n
    for i in candidates[:n_test]:
        out[i] = "test"
    for i in candidates[n_test : n_test + n_val]:
        out[i] = "val"
    return out


def _infer_task(targets: list[Any], columns: list[str]) -> str:
    if len(columns) > 1:
        return "regression"
    if any(isinstance(t, list) for t in targets):
        return "multilabel"
    numbers = [_as_number(t) for t in targets]
    if targets and all(x is not None for x in numbers):
        if not all(float(x).is_integer() for x in numbers):
            return "regression"
    return "binary" if len({category_key(t) for t in targets}) == 2 else "multiclass"


def _parse_target(raw: Any, kind: str, columns: list[str], delimiter: str) -> Any:
    column = ", ".join(columns)
    if kind == "regression":
        cells = raw if len(columns) > 1 else [raw]
        parsed = [_feature_number(v, c, "regression target") for v, c in zip(cells, columns, strict=True)]
        return parsed if len(columns) > 1 else parsed[0]
    if kind == "multilabel":
        return sorted({category_key(x) for x in _label_cells(raw, kind, delimiter, column)})
    if isinstance(raw, list):
        raise _RowProblem(column, f"a {kind} target must be one label, got the list {raw!r}")
    return category_key(_scalar(raw, column))


def _label_cells(raw: Any, kind: str, delimiter: str, column: str) -> list[Any]:
    """The labels of one target cell as written: a multilabel list or delimited string, else the cell."""
    if kind != "multilabel":
        return [raw]
    labels = raw if isinstance(raw, list) else str(_scalar(raw, column)).split(delimiter)
    return [x for x in labels if str(_scalar(x, column)).strip()]


def _note_merged_spellings(column: str, what: str, cells: Iterable[Any]) -> None:
    """Log the values written differently that :func:`category_key` makes one (``2`` and ``"2.0"``)."""
    spellings: dict[str, set[str]] = {}
    for cell in cells:
        spellings.setdefault(category_key(cell), set()).add(str(cell).strip())
    merged = {key: sorted(v) for key, v in spellings.items() if len(v) > 1}
    if merged:
        listed = "; ".join(f"{' and '.join(map(repr, v))} are the same number, so one {what} {key!r}"
                           for key, v in list(merged.items())[:5])  # fmt: skip
        log.warning("column %r: %s%s", column, listed, "; ..." if len(merged) > 5 else "")


def _split_value(value: Any, column: str) -> str:
    split = "" if _is_missing(value) else str(value).strip().lower()
    if split not in SPLITS:
        raise _RowProblem(column, f"split must be one of {list(SPLITS)}, got {value!r}")
    return split


def _check_columns(columns: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not isinstance(columns, dict) or not columns:
        raise ValueError("datamodule.columns must map modality names to {kind: ..., column: ...}")
    out = {}
    for name, spec in columns.items():
        key = f"datamodule.columns.{name}"
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            raise ValueError(f"{key}.kind must be one of {list(KINDS)}, got {spec!r}")
        allowed = {"kind", "numeric", "categorical"} if spec["kind"] == "tabular" else {"kind", "column"}
        extra = set(spec) - allowed
        if extra:
            raise ValueError(
                f"{key} has unknown key(s) {sorted(extra)}; a {spec['kind']} entry takes {sorted(allowed)}"
            )
        if spec["kind"] == "tabular":
            spec = {"kind": "tabular", "numeric": list(spec.get("numeric") or []),
                    "categorical": list(spec.get("categorical") or [])}  # fmt: skip
            if not spec["numeric"] and not spec["categorical"]:
                raise ValueError(f"{key} needs `numeric` and/or `categorical` column lists")
        elif not isinstance(spec.get("column"), str):
            raise ValueError(f"{key}.column must name the manifest column of this modality")
        out[str(name)] = dict(spec)
    return out


def _spec_columns(spec: dict[str, Any]) -> list[str]:
    return [*spec["numeric"], *spec["categorical"]] if spec["kind"] == "tabular" else [spec["column"]]


def _choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"datamodule.{key} must be one of {list(allowed)}, got {value!r}")


def _plain(value: Any) -> Any:
    """Plain dicts and lists from any mapping/sequence (an OmegaConf container included)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _native(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_native(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list | tuple | np.ndarray):
        return False
    return bool(pd.isna(value))


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer beyond the float range
        return None
    return number if math.isfinite(number) else None


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _feature_number(value: Any, column: str, what: str) -> float:
    """A numeric cell the model can take: finite and within the float32 range it computes in.

    ±inf, or 1e308, would otherwise overflow the standardisation or the loss and surface much later as a
    non-finite loss blamed on the learning rate.
    """
    number = _as_number(value)
    if number is None or abs(number) > FLOAT32_MAX:
        raise _RowProblem(
            column,
            f"{what} holds {value!r}, not a finite number within the float32 range the model computes in "
            f"(|x| <= {FLOAT32_MAX:.3g}); fix the value, leave the cell empty to mark it missing, or rescale the "
            "column (e.g. take its log)",
        )
    return number


def _scalar(value: Any, column: str) -> Any:
    """``value`` if it is one value; a list, array or mapping in a single-value cell is bad input, not text."""
    if isinstance(value, list | tuple | dict | np.ndarray):
        raise _RowProblem(
            column,
            f"the cell holds a {type(value).__name__} ({_short(value)}), but this column takes a single value (a "
            "string or a number); store one value per cell, or one column per value",
        )
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _label_order(label: str) -> tuple[int, Decimal, str]:
    """Numeric labels first, by exact value (two 20-digit ids are not equal), then the others by text."""
    number = decimal_value(label)
    return (0, number, "") if number is not None else (1, Decimal(0), label)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tokenizer_from_cache(
    spec: str, saved: str | None, ngrams: NgramTokenizer
) -> ByteTokenizer | HFTokenizer | NgramTokenizer:
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "ngrams":
        return ngrams
    if spec == "bpe":
        from tokenizers import Tokenizer

        return HFTokenizer(Tokenizer.from_str(saved), pad_token="[PAD]", source="bpe trained on the training split")
    return load_pretrained_tokenizer(spec[3:])  # the cache key holds a digest of its files: it is the same one
