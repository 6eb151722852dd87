"""Image columns: a path per cell, decoded with Pillow to ``(C, H, W)`` (C = 1 for ``image_mode: L``, 3 for RGB),
stored as uint8 and served as float in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmfw.data.image import load_image, to_float
from mmfw.data.manifest.codecs.base import ColumnCodec
from mmfw.data.manifest.reader import RowProblem, is_missing


class FileCodec(ColumnCodec):
    """A kind whose cells name files (image, audio): the files' sizes and times key the cache; a file that fails to
    decode is a bad cell (the decoders' messages name the file)."""

    def cache_key(self, records: Sequence[dict[str, Any]]) -> list[Any]:
        files = []
        for spec in self.specs.values():
            for value in (r.get(spec["column"]) for r in records):
                path = None if is_missing(value) else self.files.path(str(value), check=False)
                stat = path.stat() if path is not None and path.is_file() else None
                files.append(None if stat is None else [str(path), stat.st_size, stat.st_mtime_ns])
        return files

    def decode_cell(self, value: Any, column: str) -> np.ndarray | None:
        path = self.files.existing(str(value), column)
        if path is None:
            return None
        try:
            return self.load(path)
        except ValueError as err:
            raise RowProblem(column, str(err)) from None

    def load(self, path: Any) -> np.ndarray:
        raise NotImplementedError

    def stack(self, column: list[Any], shape: tuple[int, ...], dtype: type) -> torch.Tensor:
        """``(N, *shape)``, zeros where the value is missing."""
        array = np.zeros((len(column), *shape), dtype=dtype)
        for k, v in enumerate(column):
            if v is not None:
                array[k] = v
        return torch.from_numpy(array)


class Codec(FileCodec):
    kind = "image"
    view = staticmethod(to_float)

    @property
    def channels(self) -> int:
        return 1 if self.settings.image_mode == "L" else 3

    def load(self, path: Any) -> np.ndarray:
        return load_image(path, mode=self.settings.image_mode, size=self.settings.image_size)

    def assemble(self, modality: str, column: list[Any]) -> tuple[torch.Tensor, None]:
        return self.stack(column, (self.channels, *self.settings.image_size), np.uint8), None

    def encoder_inputs(self, modality: str) -> dict[str, Any]:
        return {"in_chans": self.channels}
