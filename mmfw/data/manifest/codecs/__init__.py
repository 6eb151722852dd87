"""One column codec per modality kind (:data:`mmfw.contracts.KINDS`): ``codecs/<kind>.py`` defines ``Codec``, a
:class:`~mmfw.data.manifest.codecs.base.ColumnCodec` that owns the kind's decoding, training statistics, assembly,
encoder inputs and re-decoding under a corruption."""

from __future__ import annotations

import importlib

from mmfw.contracts import KINDS
from mmfw.data.manifest.codecs.base import ColumnCodec, DecodeSettings, ManifestFiles

__all__ = ["ColumnCodec", "DecodeSettings", "ManifestFiles", "codec_class"]


def codec_class(kind: str) -> type[ColumnCodec]:
    """The codec of ``kind``: the class ``Codec`` of the module ``codecs/<kind>.py`` (found by its name, so adding a
    kind is adding its name to ``KINDS`` and that file, no table to edit)."""
    if kind not in KINDS:
        raise ValueError(f"modality kind must be one of {list(KINDS)}, got {kind!r}")
    return importlib.import_module(f"{__name__}.{kind}").Codec
