"""One column codec per modality kind (:data:`mmfw.contracts.KINDS`): ``codecs/<kind>.py`` defines ``Codec``, a
:class:`~mmfw.data.manifest.codecs.base.ColumnCodec` that owns the kind's decoding, training statistics, assembly,
encoder inputs and re-decoding under a corruption."""

from __future__ import annotations

import importlib
from typing import Any

from mmfw.contracts import KINDS
from mmfw.data.manifest.codecs.base import ColumnCodec, DecodeSettings, ManifestFiles

__all__ = ["ColumnCodec", "DecodeSettings", "ManifestFiles", "codec_class", "make_codecs"]


def codec_class(kind: str) -> type[ColumnCodec]:
    """The codec of ``kind``: the class ``Codec`` of the module ``codecs/<kind>.py`` (found by its name, so adding a
    kind is adding its name to ``KINDS`` and that file, no table to edit)."""
    if kind not in KINDS:
        raise ValueError(f"modality kind must be one of {list(KINDS)}, got {kind!r}")
    return importlib.import_module(f"{__name__}.{kind}").Codec


def make_codecs(
    columns: dict[str, dict[str, Any]], *, settings: DecodeSettings, files: ManifestFiles
) -> dict[str, ColumnCodec]:
    """One codec per kind present in ``columns`` (in order of first appearance), each given its modalities' entries."""
    kinds = dict.fromkeys(spec["kind"] for spec in columns.values())
    return {
        kind: codec_class(kind)(settings=settings, files=files,
                                specs={m: s for m, s in columns.items() if s["kind"] == kind})
        for kind in kinds
    }  # fmt: skip
