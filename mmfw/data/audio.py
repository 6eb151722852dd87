"""Audio I/O and a log-mel front end in numpy/scipy (torchaudio has no build for our torch).

``log_mel_spectrogram``: ``log(M · |STFT(w · x)|² + eps)`` with a Hann window ``w`` and a triangular mel
filterbank ``M`` (HTK or Slaney mel scale), cropped or padded to a fixed number of frames → ``(n_mels, T)``.
"""

from __future__ import annotations

import os
import struct
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

LOG_EPS = 1e-6
"""Added to the mel power before the log; ``log(LOG_EPS)`` is the floor that silence (and padding) maps to."""


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as a float32 mono waveform in [-1, 1] and its sample rate.

    Multi-channel audio is mixed down by averaging the channels.

    Raises:
        ValueError: the file is missing, truncated or not audio; the message names the file.
    """
    try:
        wave, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise ValueError(
            f"cannot read audio file {path}: {err}. The file is missing or corrupt: delete it and download or "
            "copy the data set again (or remove the file from the raw folder)."
        ) from err
    check_wav_complete(path)
    if wave.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples: replace it with a good copy or remove it.")
    return wave.mean(axis=1).astype(np.float32), int(sample_rate)


def check_wav_complete(path: str | Path) -> None:
    """Raise if a RIFF WAV holds fewer audio bytes than its ``data`` chunk header declares.

    libsndfile reads such a file (a copy or download cut off mid-data) as shorter audio without a word; other
    formats it checks itself (a cut FLAC fails to decode). Streaming writers that leave the size 0 or 0xFFFFFFFF
    (unknown) are not judged.

    Raises:
        ValueError: the file is truncated; the message names it and the sizes.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        order = "<" if head[:4] == b"RIFF" else ">"
        size = os.fstat(f.fileno()).st_size
        while (chunk := f.read(8)) and len(chunk) == 8:
            declared = struct.unpack(order + "I", chunk[4:])[0]
            if chunk[:4] == b"data":
                present = size - f.tell()
                if declared not in (0, 0xFFFFFFFF) and present < declared:
                    raise ValueError(
                        f"audio file {path} is truncated: its header declares {declared} bytes of audio data but "
                        f"only {present} are present (a copy or download cut off). Replace it with a complete copy "
                        "or remove it."
                    )
                return
            f.seek(declared + (declared & 1), os.SEEK_CUR)  # chunks are padded to an even size


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D waveform by the rational factor ``target_sr / orig_sr`` (polyphase FIR filter)."""
    if orig_sr == target_sr:
        return wave
    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(wave, target_sr // g, orig_sr // g).astype(np.float32)


def add_white_noise(
    wave: np.ndarray, snr_db: float, rng: np.random.Generator, *, signal_power: float | None = None
) -> np.ndarray:
    """Add white Gaussian noise with power ``P_s / 10^(snr_db/10)``.

    Args:
        wave: 1-D waveform.
        snr_db: signal-to-noise ratio in dB.
        rng: source of the noise (seed it for reproducible noise).
        signal_power: reference power ``P_s``; defaults to ``mean(wave²)``. Pass the power of the unpadded
            recording when ``wave`` has been padded with silence, so padding does not lower the noise level.
    """
    power = float(np.mean(np.square(wave, dtype=np.float64))) if signal_power is None else signal_power
    noise_std = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (wave + rng.normal(0.0, noise_std, size=wave.shape)).astype(np.float32)


def hz_to_mel(freq: np.ndarray | float, *, htk: bool = True) -> np.ndarray:
    """Hz → mel. HTK: ``2595 log10(1 + f/700)``; Slaney: linear below 1 kHz (3 mel per 200 Hz), log above."""
    freq = np.asarray(freq, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = freq / f_sp
    log_part = min_log_hz / f_sp + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep
    return np.where(freq >= min_log_hz, log_part, mel)


def mel_to_hz(mel: np.ndarray | float, *, htk: bool = True) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, *, f_min: float = 0.0, f_max: float | None = None, htk: bool = True
) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``.

    Filter ``m`` rises linearly from centre ``m-1`` to a peak of 1 at centre ``m`` and falls to centre ``m+1``;
    the ``n_mels + 2`` centres are equally spaced on the mel scale between ``f_min`` and ``f_max`` (default
    Nyquist). Peaks are height 1 (no area normalisation): the log that follows makes a scale irrelevant.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    centres = mel_to_hz(np.linspace(hz_to_mel(f_min, htk=htk), hz_to_mel(f_max, htk=htk), n_mels + 2), htk=htk)
    lower, peak, upper = centres[:-2, None], centres[1:-1, None], centres[2:, None]
    rising = (fft_freqs[None, :] - lower) / (peak - lower)
    falling = (upper - fft_freqs[None, :]) / (upper - peak)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def power_spectrogram(wave: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    """``|STFT|²`` with a periodic Hann window, frames centred on ``t · hop_length`` (reflect padding at the
    edges, as librosa/torchaudio with ``center=True``) → ``(n_fft // 2 + 1, 1 + len(wave) // hop_length)``."""
    pad = n_fft // 2
    mode = "reflect" if len(wave) > pad else "constant"
    padded = np.pad(wave.astype(np.float32), pad, mode=mode)
    if len(padded) < n_fft:
        padded = np.pad(padded, (0, n_fft - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]  # (T, n_fft)
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    spectrum = np.fft.rfft(frames * window, axis=1)  # (T, F)
    return (np.abs(spectrum) ** 2).T.astype(np.float32)


def fix_length(x: np.ndarray, length: int, *, axis: int = -1, pad_value: float = 0.0) -> np.ndarray:
    """Centre-crop or centre-pad ``x`` along ``axis`` to ``length`` (the extra element goes to the end)."""
    size = x.shape[axis]
    if size > length:
        start = (size - length) // 2
        return np.take(x, np.arange(start, start + length), axis=axis)
    if size < length:
        before = (length - size) // 2
        widths = [(0, 0)] * x.ndim
        widths[axis] = (before, length - size - before)
        return np.pad(x, widths, constant_values=pad_value)
    return x


def log_mel_spectrogram(
    wave: np.ndarray,
    sample_rate: int,
    *,
    n_mels: int,
    n_fft: int,
    hop_length: int,
    num_frames: int,
    htk: bool = True,
) -> np.ndarray:
    """Fixed-size log-mel spectrogram ``(n_mels, num_frames)`` float32.

    Longer inputs are centre-cropped (the middle of an utterance is kept); shorter ones are centred and padded
    with zero power, i.e. ``log(LOG_EPS)``, the value silence has.
    """
    power = power_spectrogram(wave, n_fft=n_fft, hop_length=hop_length)  # (F, T)
    mel = mel_filterbank(sample_rate, n_fft, n_mels, htk=htk) @ power  # (n_mels, T)
    log_mel = np.log(mel + LOG_EPS)
    return fix_length(log_mel, num_frames, axis=1, pad_value=float(np.log(LOG_EPS))).astype(np.float32)
