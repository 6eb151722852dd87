"""Audio columns: a path per cell (WAV/FLAC/OGG via soundfile), mixed to mono, resampled to ``sample_rate``, log-mel
``(1, n_mels, num_frames)``. Decoded again under a waveform corruption (robustness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mmfw.data.audio import log_mel_spectrogram, read_wav, resample
from mmfw.data.manifest.codecs.image import FileCodec


class Codec(FileCodec):
    kind = "audio"
    redecodes = True

    def wave(self, path: Any) -> np.ndarray:
        wave, rate = read_wav(path)
        return resample(wave, rate, self.settings.audio["sample_rate"])

    def load(self, path: Any) -> np.ndarray:
        return log_mel_spectrogram(self.wave(path), **self.settings.audio)[None]

    def assemble(self, modality: str, column: list[Any]) -> tuple[torch.Tensor, None]:
        shape = (1, self.settings.audio["n_mels"], self.settings.audio["num_frames"])
        return self.stack(column, shape, np.float32), None

    def encoder_inputs(self, modality: str) -> dict[str, Any]:
        return {"in_chans": 1}

    def redecode(
        self, modality: str, cells: list[Any], present: torch.Tensor, like: Any, corrupt: Callable[..., Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``corrupt(wave, *, sample_rate, signal_power, index) -> wave`` on each present resampled waveform
        (``signal_power``: its mean power), then the log-mel."""
        decoded = torch.zeros_like(like)
        rate = self.settings.audio["sample_rate"]
        for i in np.flatnonzero(present.numpy()):
            wave = self.wave(self.files.path(str(cells[i])))
            power = float(np.mean(np.square(wave, dtype=np.float64)))
            wave = corrupt(wave, sample_rate=rate, signal_power=power, index=int(i))
            decoded[i, 0] = torch.from_numpy(log_mel_spectrogram(wave, **self.settings.audio))
        return decoded, present
