"""What a column codec is: everything the manifest datamodule does with the columns of one modality kind.

One codec instance serves every modality of its kind in a run (the text codec fits one tokenizer on all text
columns). Its steps, in the order the datamodule calls them:

1. ``check_spec`` — the ``datamodule.columns.<modality>`` entry; ``columns`` — the manifest columns it reads.
2. ``cache_key`` — what, besides the manifest and the settings, changes the decoded samples (files' sizes/times).
3. ``decode`` — one row's cells → a decoded value, or None when missing; a bad cell raises :class:`RowProblem`.
4. ``fit`` — statistics of the training split only (a tokenizer, standardisation); ``bad_rows`` — rows those
   statistics cannot encode; ``state``/``restore`` — the statistics saved in, and read back from, the disk cache.
5. ``assemble`` — a split's decoded values → the batch tensor(s); ``view`` serves a stored sample (uint8 → float).
6. ``encoder_inputs`` — the data-dependent arguments of the modality's encoder (``in_chans``, ``vocab_size``...).
7. ``redecode`` — the split decoded again through a corruption (robustness), where ``redecodes`` is True.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from mmfw.data.manifest.reader import RowProblem, is_missing, scalar


@dataclass(frozen=True)
class DecodeSettings:
    """The manifest datamodule's preprocessing settings (``conf/datamodule/manifest.yaml``) that codecs read.

    A new kind may read its own options from its ``columns`` entry instead (:meth:`ColumnCodec.check_spec`).
    """

    image_mode: str
    image_size: tuple[int, int]
    audio: dict[str, int]  # sample_rate, n_mels, n_fft, hop_length, num_frames
    text_tokenizer: str
    text_len: int  # ids per text: max_ngrams for ngrams, else max_text_len
    bpe_vocab_size: int
    ngram_buckets: int
    ngram_unique: bool
    ngram_split_kinds: bool = False


@dataclass(frozen=True)
class ManifestFiles:
    """Files a manifest names: relative to its folder, kept inside it unless allowed, missing ones an error or
    masked (``missing_file``)."""

    root: Path
    allow_outside_root: bool
    missing_file: str  # error | mask

    def path(self, value: str, *, check: bool = True) -> Path:
        """The file ``value`` names; with ``check``, refuse it unless it lies in the manifest's folder, both as
        written (``../``, absolute paths) and once symbolic links are followed."""
        path = Path(os.path.normpath(self.root / Path(value).expanduser()))
        if not check or self.allow_outside_root:
            return path
        fix = "move the file under it or set datamodule.allow_outside_root=true"
        if not path.is_relative_to(self.root):
            raise ValueError(f"path {value!r} leaves the manifest folder {self.root}; {fix}")
        real = path.resolve()
        if not real.is_relative_to(self.root.resolve()):
            raise ValueError(
                f"path {value!r} leaves the manifest folder {self.root} through a symbolic link (it resolves to "
                f"{real}); {fix}"
            )
        return path

    def existing(self, value: str, column: str) -> Path | None:
        """The checked path of an existing file; None for a missing file with ``missing_file: mask``."""
        try:
            path = self.path(value)
        except ValueError as err:
            raise RowProblem(column, str(err)) from None
        if not path.is_file():
            if self.missing_file == "mask":
                return None
            raise RowProblem(column, f"file not found: {path} (set datamodule.missing_file=mask to mask it)")
        return path


class ColumnCodec:
    """A single-column kind's defaults; a codec overrides :meth:`decode_cell`, :meth:`assemble` and
    :meth:`encoder_inputs`, and the other steps where its kind needs them (see the module docstring)."""

    kind: ClassVar[str]
    view: ClassVar[Callable[[torch.Tensor], torch.Tensor] | None] = None
    redecodes: ClassVar[bool] = False  # True where :meth:`redecode` is implemented

    def __init__(self, *, settings: DecodeSettings, files: ManifestFiles, specs: dict[str, dict[str, Any]]) -> None:
        self.settings, self.files, self.specs = settings, files, specs  # specs: {modality: entry} of this kind

    @classmethod
    def check_spec(cls, key: str, spec: dict[str, Any]) -> dict[str, Any]:
        """``{kind, column}``; ``key`` is the config key of the entry, for messages."""
        extra = set(spec) - {"kind", "column"}
        if extra:
            raise ValueError(f"{key} has unknown key(s) {sorted(extra)}; a {cls.kind} entry takes ['column', 'kind']")
        if not isinstance(spec.get("column"), str):
            raise ValueError(f"{key}.column must name the manifest column of this modality")
        return dict(spec)

    @staticmethod
    def columns(spec: dict[str, Any]) -> list[str]:
        return [spec["column"]]

    def cache_key(self, records: Sequence[dict[str, Any]]) -> Any:
        return None

    def decode(self, record: dict[str, Any], spec: dict[str, Any]) -> Any:
        """The decoded value of one modality of one row, or None when missing."""
        column = spec["column"]
        value = record.get(column)
        return None if is_missing(value) else self.decode_cell(scalar(value, column), column)

    def decode_cell(self, value: Any, column: str) -> Any:
        raise NotImplementedError

    def log_values(self, records: Sequence[dict[str, Any]], rows: Sequence[int]) -> None:
        """Log what the datamodule should tell about the values (e.g. categories spelled two ways)."""

    def fit(self, values: dict[str, list[Any]], train: Sequence[int]) -> None:
        """Fit the training statistics on the ``train`` rows of ``values`` (``{modality: decoded per row}``)."""

    def bad_rows(self, values: dict[str, list[Any]], rows: Sequence[int]) -> list[tuple[int, RowProblem]]:
        return []

    def state(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        """Take back the statistics :meth:`state` saved."""

    def assemble(self, modality: str, column: list[Any]) -> tuple[Any, dict[str, int] | None]:
        """A split's inputs from its decoded values (None = missing), and per-kind counts to report (or None)."""
        raise NotImplementedError

    def encoder_inputs(self, modality: str) -> dict[str, Any]:
        raise NotImplementedError

    def redecode(
        self, modality: str, cells: list[Any], present: torch.Tensor, like: Any, corrupt: Callable[..., Any]
    ) -> tuple[Any, torch.Tensor]:
        """``(inputs, present)`` of a split decoded again from its raw ``cells`` through ``corrupt``; ``like`` is
        the clean inputs."""
        raise NotImplementedError
