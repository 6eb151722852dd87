"""White noise at a signal-to-noise ratio, added to the waveform before the log-mel: ``x' = x + σ ε``,
``σ² = P_s / 10^(SNR/10)``, ``ε ~ N(0, I)``.

The spectrogram is computed again from the noisy waveform by the datamodule (``corrupted_dataloader``), so the
corruption is the real one, not an approximation in the spectrogram domain. ``P_s`` is the signal power the
datamodule reports: AV-digits, the power every recording is normalised to (its noise comes on top of the data
set's own ``snr_db`` noise); a manifest, the mean power of the decoded recording.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mmfw.data.audio import add_white_noise
from mmfw.robustness._common import check_levels, sample_rng


class AudioSNRNoise:
    """Additive white Gaussian noise on the waveform of an audio modality, swept over decreasing SNRs.

    The same ``ε`` is drawn for a recording at every level (seeded by ``seed``, the modality name and the
    sample's position in the split), so levels differ only in ``σ``.

    Args:
        snr_db: signal-to-noise ratios in dB, from mild to severe (decreasing), e.g. ``[20, 10, 5, 0, -5]``.
    """

    kind = "audio"
    name = "snr_noise"
    clean_level = None  # the clean point has SNR = +inf: it is not on the dB axis
    level_label = "added white noise SNR (dB)"

    def __init__(self, *, snr_db: Sequence[float]) -> None:
        self.levels = check_levels(snr_db, "AudioSNRNoise.snr_db", above=-np.inf, decreasing=True)

    def batches(self, datamodule: Any, split: str, modality: str, level: float, seed: int) -> Iterable[dict]:
        """The split's batches with ``modality`` recomputed from waveforms with noise at ``level`` dB SNR."""
        return datamodule.corrupted_dataloader(split, modality, self.transform(level, seed, modality))

    @staticmethod
    def transform(snr_db: float, seed: int, modality: str):  # noqa: ANN205 (a closure)
        """``corrupt(wave, *, sample_rate, signal_power, index) -> noisy wave`` for the datamodule."""

        def corrupt(wave: np.ndarray, *, sample_rate: int, signal_power: float, index: int) -> np.ndarray:
            return add_white_noise(wave, snr_db, sample_rng(seed, modality, index), signal_power=signal_power)

        return corrupt
