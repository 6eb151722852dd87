"""The manifest datamodule: any mix of image, audio, text and tabular columns from a manifest file, one row per sample
(see the package docstring for the samples' shapes). Decoded samples stay in memory and are cached on disk, keyed by
the manifest's content, the codecs' keys (the referenced files' sizes and times, the tokenizer) and every setting.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmfw.contracts import KINDS, TASK_KINDS, TaskSpec
from mmfw.data.base import SPLITS, MultimodalDataModule, TensorDictDataset
from mmfw.data.manifest.build import SplitPlan, build_samples
from mmfw.data.manifest.codecs import DecodeSettings, ManifestFiles, codec_class, make_codecs
from mmfw.data.manifest.new_rows import FITTED_KEYS, NewRows, decode_new_rows, read_fitted, save_fitted
from mmfw.data.manifest.reader import ManifestError, is_missing, plain, read_manifest, sha256_file

log = logging.getLogger(__name__)

_CACHE_VERSION = 4  # bump when decoding or the cache layout changes


class ManifestDataModule(MultimodalDataModule):
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
        split_seed: seed of the seeded split and of the folds (stratified by label for classification); fixed by
            default, so that runs with different ``seed`` see one split.
        folds: k-fold cross-validation: the rows the split puts in train or val are cut into ``folds`` stratified
            folds (:func:`~mmfw.data.manifest.splits.fold_split`); the test split stays as it is. None: no folds.
        fold: which fold validates (``0 <= fold < folds``); the others train.
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
        ngram_split_kinds: ``ngrams`` only: word and character n-grams hashed into two halves of the buckets, so
            the encoder can pool them apart (``encoder.<text>.kinds: separate``).
        missing_file: ``error``: a referenced file that does not exist is bad input; ``mask``: it masks that
            modality of the sample.
        on_bad_sample: ``error`` raises :class:`ManifestError` at the first bad row; ``skip`` drops bad rows, logs
            them and lists them in ``.skipped``.
        allow_outside_root: allow paths that leave the manifest's folder (``../x.png``, absolute paths elsewhere).
        cache_dir: folder for decoded samples; None keeps them in memory only.
        batch_size: per-device batch size.
        num_workers: dataloader worker processes.
        pin_memory: pin batches in page-locked memory.
        preprocessing: a run folder's ``preprocessing.pt`` (:meth:`save_preprocessing`): the task, encoder inputs
            and fitted codecs are taken from it, and the manifest is read only when a split is asked for, so that
            :meth:`decode_new_rows` works once the training data is gone (set by :func:`mmfw.load_run`).
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
        folds: int | None = None,
        fold: int | None = None,
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
        ngram_split_kinds: bool = False,
        missing_file: str = "error",
        on_bad_sample: str = "error",
        allow_outside_root: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        preprocessing: str | None = None,
    ) -> None:
        self.manifest = Path(os.path.normpath(Path(manifest).expanduser().absolute()))
        self.encoding = _check_encoding(encoding)
        self.columns = check_columns(plain(columns))
        super().__init__(
            modalities=list(self.columns) if modalities is None else list(plain(modalities)),
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=int(seed),
        )  # fmt: skip
        self.target = [target] if isinstance(target, str) else list(plain(target))
        _check_choices(
            modalities=self.modalities, columns=self.columns, task=task, target=self.target, image_mode=image_mode,
            missing_file=missing_file, on_bad_sample=on_bad_sample, text_tokenizer=text_tokenizer,
            val_fraction=val_fraction, test_fraction=test_fraction, folds=folds, fold=fold,
        )  # fmt: skip
        size = [int(image_size)] * 2 if isinstance(image_size, int) else [int(s) for s in plain(image_size)]
        self.split_seed = int(split_seed)
        self.fold = None if folds is None else {"fold": int(fold), "folds": int(folds)}
        self.plan = SplitPlan(
            manifest=self.manifest, target=self.target, task=task, label_delimiter=label_delimiter,
            split_column=split_column, val_fraction=float(val_fraction), test_fraction=float(test_fraction),
            split_seed=self.split_seed, folds=folds, fold=fold, on_bad_sample=on_bad_sample,
        )  # fmt: skip
        self.settings = DecodeSettings(
            image_mode=image_mode, image_size=(size[0], size[1]),
            audio=dict(sample_rate=sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                       num_frames=num_frames),
            # the ids per text of the chosen tokenizer: the cut that is counted in `truncated`
            text_tokenizer=text_tokenizer,
            text_len=int(max_ngrams) if text_tokenizer == "ngrams" else int(max_text_len),
            bpe_vocab_size=bpe_vocab_size, ngram_buckets=int(ngram_buckets), ngram_unique=bool(ngram_unique),
            ngram_split_kinds=bool(ngram_split_kinds),
        )  # fmt: skip
        self.files = ManifestFiles(root=self.manifest.parent, allow_outside_root=allow_outside_root,
                                   missing_file=missing_file)  # fmt: skip
        self.codecs = make_codecs(self.columns, settings=self.settings, files=self.files)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        # Everything that changes the decoded samples keys the disk cache (modalities does not: all are decoded).
        plan = {k: v for k, v in vars(self.plan).items() if k != "manifest"}  # the file is keyed by its content
        self._settings = {"encoding": encoding, "columns": self.columns, "plan": plan, "decode": vars(self.settings),
                          "max_text_len": max_text_len, "max_ngrams": max_ngrams, "missing_file": missing_file,
                          "allow_outside_root": allow_outside_root}  # fmt: skip
        self.split_rows: dict[str, list[int]] = {}
        self._data: dict[str, Any] | None = None
        self._task: TaskSpec | None = None
        self._encoder_inputs: dict[str, dict[str, Any]] = {}
        self.preprocessing = Path(preprocessing) if preprocessing else None

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
        if self._task is None:
            raise RuntimeError("ManifestDataModule.encoder_inputs is known after prepare_data()/setup()")
        return {m: dict(self._encoder_inputs[m]) for m in self.modalities}

    @property
    def modality_kinds(self) -> dict[str, str]:
        """``{modality: kind}`` of the selected modalities (``image``, ``audio``, ``text`` or ``tabular``)."""
        return {m: self.columns[m]["kind"] for m in self.modalities}

    # ------------------------------------------------------------------ lightning
    def prepare_data(self) -> None:
        """Decode everything once (or load it from the cache); other processes then hit the disk cache."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def dataset(self, split: str) -> TensorDictDataset:
        """The samples of ``split`` with the selected modalities only."""
        data = self._load_or_build()  # after setup(), what it read; restored from `preprocessing`: read now
        part = data["splits"][split]
        index = [data["modalities"].index(m) for m in self.modalities]
        views = {m: self.codecs[k].view for m, k in self.modality_kinds.items() if self.codecs[k].view is not None}
        inputs = {m: part["inputs"][m] for m in self.modalities}
        return TensorDictDataset(inputs, part["mask"][:, index].contiguous(), part["target"], views)

    def write_splits(self, path: Path) -> None:
        """``path`` as CSV ``row,split``: each manifest data row (1-based, header not counted) and its split;
        rows dropped as bad (``on_bad_sample: skip``) are ``skipped``."""
        table = [(row, split) for split in SPLITS for row in self.split_rows[split]]
        table += [(s["row"], "skipped") for s in self.skipped]
        with Path(path).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "split"])
            writer.writerows(sorted(table))

    def _cells(self, split: str, modality: str) -> list[Any]:
        """The raw cells of a single-column ``modality`` in ``split``, in dataset order."""
        self._load_or_build()
        records = read_manifest(self.manifest, encoding=self.encoding)
        column = self.columns[modality]["column"]
        return [records[row - 1].get(column) for row in self.split_rows[split]]

    def raw_texts(self, split: str, modality: str) -> list[str]:
        """The raw strings of text ``modality`` in ``split``, in dataset order ("" where missing)."""
        if self.columns[modality]["kind"] != "text":
            raise ValueError(f"modality {modality!r} is {self.columns[modality]['kind']}, not text")
        return ["" if is_missing(v) else str(v) for v in self._cells(split, modality)]

    def decode_new_rows(self, manifest: str | Path, *, on_bad_sample: str | None = None) -> NewRows:
        """Another manifest's rows through this run's preprocessing (:mod:`~mmfw.data.manifest.new_rows`), for
        prediction; ``on_bad_sample`` None: this datamodule's setting."""
        self._load()
        return decode_new_rows(self, manifest, on_bad_sample=on_bad_sample or self.plan.on_bad_sample)

    # ------------------------------------------------------------------ robustness hook (mmfw.robustness)
    def corrupted_dataset(self, split: str, modality: str, corrupt: Callable[..., Any]) -> TensorDictDataset:
        """``split``'s samples, in order, with ``modality`` decoded again from the manifest through ``corrupt``
        (the signature ``corrupt`` takes is its kind's: :meth:`ColumnCodec.redecode` of that codec)."""
        kind = self.modality_kinds.get(modality)
        codec = self.codecs.get(kind)
        if codec is None or not codec.redecodes:
            raise ValueError(f"only audio and text modalities are decoded again; {modality!r} is {kind or 'unknown'}")
        base = self.dataset(split)
        present = base.mask[:, self.modalities.index(modality)].clone()
        decoded, present = codec.redecode(modality, self._cells(split, modality), present, base.inputs[modality],
                                          corrupt)  # fmt: skip
        return base.replace(modality, decoded, present)

    def save_preprocessing(self, path: Path) -> None:
        """``path``: the training split's fitted preprocessing (task, encoder inputs, codec states), which
        :meth:`decode_new_rows` needs and the run folder keeps (``preprocessing=`` reads it back)."""
        data = self._load_or_build()
        save_fitted(path, {key: data[key] for key in FITTED_KEYS})

    # ------------------------------------------------------------------ cache
    def _load(self) -> None:
        """What the model and new rows need: from ``preprocessing`` when given (no data read), else the data."""
        if self.preprocessing is None:
            self._load_or_build()
        elif self._task is None:
            self._adopt_fitted(read_fitted(self.preprocessing))

    def _load_or_build(self) -> dict[str, Any]:
        """The decoded samples (splits, statistics), from the disk cache or decoded now; read once."""
        if self._data is not None:
            return self._data
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
            data = build_samples(records, self.plan, self.columns, self.codecs)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                torch.save(data, tmp)
                os.replace(tmp, path)  # atomic: concurrent runs never read a half-written file
        self._adopt(data)
        return data

    def _cache_key(self, records: list[dict[str, Any]]) -> str:
        keys = {kind: codec.cache_key(records) for kind, codec in self.codecs.items()}
        blob = json.dumps([_CACHE_VERSION, sha256_file(self.manifest), self._settings, keys], default=str,
                          sort_keys=True)  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _adopt_fitted(self, fitted: dict[str, Any]) -> None:
        task = fitted["task"]
        self._task = TaskSpec(task["kind"], int(task["num_outputs"]), task["class_names"])
        self._encoder_inputs = {m: dict(inputs) for m, inputs in fitted["encoder_inputs"].items()}
        for kind, codec in self.codecs.items():
            codec.restore(fitted["codec_state"][kind])

    def _adopt(self, data: dict[str, Any]) -> None:
        self._data = data
        self._adopt_fitted(data)
        self.skipped = [dict(s) for s in data["skipped"]]
        self.split_rows = {s: data["splits"][s]["rows"].tolist() for s in SPLITS}
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
                "max_ngrams" if self.settings.text_tokenizer == "ngrams" else "max_text_len", self.settings.text_len,
            )  # fmt: skip
        sizes = {s: len(data["splits"][s]["target"]) for s in SPLITS}
        fold = f", fold {self.fold['fold']} of {self.fold['folds']}" if self.fold else ""
        log.info("manifest %s: %s samples%s, task %s", self.manifest, sizes, fold, self._task)

    def _check_header(self, records: list[dict[str, Any]]) -> None:
        """Every column the config names is in the file: a typo fails here, naming its config key."""
        present = set().union(*(r.keys() for r in records))
        named = [
            (column, f"column {column!r} named in datamodule.columns.{name}")
            for name, spec in self.columns.items()
            for column in codec_class(spec["kind"]).columns(spec)
        ]
        named += [(column, f"target column {column!r} (datamodule.target)") for column in self.target]
        for column, where in named:
            if column not in present:
                raise ManifestError(f"{where} is not in the file; its columns are {sorted(present)}",
                                    file=self.manifest, column=column)  # fmt: skip


def check_columns(columns: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``datamodule.columns``, each entry checked by its kind's codec."""
    if not isinstance(columns, dict) or not columns:
        raise ValueError("datamodule.columns must map modality names to {kind: ..., column: ...}")
    out = {}
    for name, spec in columns.items():
        key = f"datamodule.columns.{name}"
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            raise ValueError(f"{key}.kind must be one of {list(KINDS)}, got {spec!r}")
        out[str(name)] = codec_class(spec["kind"]).check_spec(key, spec)
    return out


def _check_encoding(encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"datamodule.encoding={encoding!r} is not a known text encoding (utf-8, latin-1, "
                         "cp1252, ...)") from None  # fmt: skip
    return encoding


def _check_choices(
    *, modalities: list[str], columns: dict[str, Any], task: str | None, target: list[str], image_mode: str,
    missing_file: str, on_bad_sample: str, text_tokenizer: str, val_fraction: float, test_fraction: float,
    folds: int | None, fold: int | None,
) -> None:  # fmt: skip
    unknown = [m for m in modalities if m not in columns]
    if unknown or not modalities:
        raise ValueError(
            f"modalities={modalities} names {unknown or 'nothing'}, but datamodule.columns configures "
            f"{sorted(columns)}: set `modalities` to some of those (or add columns for the others)"
        )
    _choice("task", task, (*TASK_KINDS, None))
    if len(target) > 1 and task not in (None, "regression"):
        raise ValueError(f"a list of target columns means multi-output regression; datamodule.task is {task!r}")
    _choice("image_mode", image_mode, ("L", "RGB"))
    _choice("missing_file", missing_file, ("error", "mask"))
    _choice("on_bad_sample", on_bad_sample, ("error", "skip"))
    if not (text_tokenizer in ("ngrams", "bytes", "bpe") or (text_tokenizer.startswith("hf:") and text_tokenizer[3:])):
        raise ValueError(f"datamodule.text_tokenizer must be ngrams, bytes, bpe or hf:<path>, got {text_tokenizer!r}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("datamodule.val_fraction and test_fraction must be in [0, 1) with a sum below 1")
    if folds is None and fold is not None:
        raise ValueError(f"datamodule.fold={fold} needs datamodule.folds (the number of folds, e.g. folds=5)")
    if folds is not None and not (folds >= 2 and fold is not None and 0 <= fold < folds):
        raise ValueError(
            f"datamodule.folds={folds} datamodule.fold={fold}: folds must be >= 2 and fold one of 0..folds-1 "
            "(e.g. datamodule.folds=5 datamodule.fold=0)"
        )


def _choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"datamodule.{key} must be one of {list(allowed)}, got {value!r}")
