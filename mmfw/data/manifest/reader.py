"""Reading a manifest (CSV/TSV, JSONL or Parquet) into rows, and the cell helpers every codec shares.

Errors name the manifest, the data row (1-based, the header not counted) and the column (:class:`ManifestError`);
a codec reports a bad cell as a :class:`RowProblem`, which the datamodule turns into a ManifestError or a skipped row.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


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


class RowProblem(Exception):
    """A bad cell of one row: the column and why (the datamodule adds the file and the row)."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column, self.reason = column, reason


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
    return [{k: native(v) for k, v in r.items()} for r in frame.to_dict("records")]


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


def plain(value: Any) -> Any:
    """Plain dicts and lists from any mapping/sequence (an OmegaConf container included)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def native(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [native(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list | tuple | np.ndarray):
        return False
    return bool(pd.isna(value))


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer beyond the float range
        return None
    return number if math.isfinite(number) else None


FLOAT32_MAX = float(np.finfo(np.float32).max)


def feature_number(value: Any, column: str, what: str) -> float:
    """A numeric cell the model can take: finite and within the float32 range it computes in.

    ±inf, or 1e308, would otherwise overflow the standardisation or the loss and surface much later as a
    non-finite loss blamed on the learning rate.
    """
    number = as_number(value)
    if number is None or abs(number) > FLOAT32_MAX:
        raise RowProblem(
            column,
            f"{what} holds {value!r}, not a finite number within the float32 range the model computes in "
            f"(|x| <= {FLOAT32_MAX:.3g}); fix the value, leave the cell empty to mark it missing, or rescale the "
            "column (e.g. take its log)",
        )
    return number


def scalar(value: Any, column: str) -> Any:
    """``value`` if it is one value; a list, array or mapping in a single-value cell is bad input, not text."""
    if isinstance(value, list | tuple | dict | np.ndarray):
        raise RowProblem(
            column,
            f"the cell holds a {type(value).__name__} ({_short(value)}), but this column takes a single value (a "
            "string or a number); store one value per cell, or one column per value",
        )
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
