"""The numpy log-mel front end, on real WAV files written to tmp_path."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmfw.data.audio import (
    LOG_EPS,
    add_white_noise,
    hz_to_mel,
    log_mel_spectrogram,
    mel_filterbank,
    mel_to_hz,
    read_wav,
    resample,
)

SR = 8000


def _tone(freq: float, seconds: float = 0.5, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_read_wav_mono_pcm16(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(440), SR, subtype="PCM_16")
    wave, sr = read_wav(path)
    assert sr == SR and wave.dtype == np.float32 and wave.ndim == 1
    assert np.abs(wave).max() <= 1.0
    np.testing.assert_allclose(wave, _tone(440), atol=1e-4)


def test_read_wav_mixes_stereo_down(tmp_path: Path) -> None:
    left, right = _tone(440), np.zeros(int(0.5 * SR), dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="PCM_16")
    wave, _ = read_wav(path)
    assert wave.shape == left.shape
    np.testing.assert_allclose(wave, left / 2, atol=1e-4)


def test_read_wav_corrupt_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "3_bad_0.wav"
    path.write_bytes(b"RIFF\x00\x00garbage that is not a wave file")
    with pytest.raises(ValueError, match=r"3_bad_0\.wav.*corrupt"):
        read_wav(path)


@pytest.mark.parametrize("cut", [1, 1001, 7999])
def test_read_wav_truncated_mid_data_is_corrupt(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, _tone(440), SR, subtype="PCM_16")  # 4000 frames = 8000 data bytes
    path.write_bytes(path.read_bytes()[:-cut])  # libsndfile alone would return the shorter audio
    with pytest.raises(ValueError, match=r"cut\.wav is truncated: its header declares 8000 bytes of audio data"):
        read_wav(path)


@pytest.mark.parametrize("subtype,frames", [("PCM_16", 4000), ("PCM_U8", 3999), ("FLOAT", 4000)])
def test_read_wav_complete_files_with_padding_and_trailing_chunks(tmp_path: Path, subtype: str, frames: int) -> None:
    path = tmp_path / "ok.wav"
    with sf.SoundFile(path, "w", SR, 1, subtype=subtype) as f:  # 8-bit with odd frames: a pad byte after data
        f.write(_tone(440)[:frames])
        f.title = "a LIST chunk after the data"
    assert read_wav(path)[0].shape == (frames,)


def test_resample_length_and_content() -> None:
    wave = _tone(200, seconds=1.0, sr=SR)
    up = resample(wave, SR, 16000)
    assert up.shape == (16000,)
    np.testing.assert_allclose(up[2000:14000], _tone(200, seconds=1.0, sr=16000)[2000:14000], atol=2e-2)
    assert resample(wave, SR, 11025).shape == (11025,)
    assert resample(wave, SR, SR) is wave


def test_white_noise_snr_matches_request() -> None:
    wave = _tone(300, seconds=2.0)
    for snr_db in (0.0, 10.0, 20.0):
        noisy = add_white_noise(wave, snr_db, np.random.default_rng(0))
        noise = noisy - wave
        measured = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert measured == pytest.approx(snr_db, abs=0.2)
        assert abs(noise.mean()) < 0.01 * noise.std()


def test_white_noise_is_seeded() -> None:
    wave = _tone(300)
    a = add_white_noise(wave, 10.0, np.random.default_rng(7))
    b = add_white_noise(wave, 10.0, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_white_noise_reference_power() -> None:
    padded = np.concatenate([_tone(300), np.zeros(SR, dtype=np.float32)])
    noisy = add_white_noise(padded, 10.0, np.random.default_rng(0), signal_power=0.125)
    assert np.mean((noisy - padded) ** 2) == pytest.approx(0.0125, rel=0.05)


@pytest.mark.parametrize("htk", [True, False])
def test_mel_scale_round_trip_and_anchor(htk: bool) -> None:
    freqs = np.array([0.0, 250.0, 1000.0, 3999.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(freqs, htk=htk), htk=htk), freqs, atol=1e-6)
    # Both scales are anchored at 1 kHz: HTK gives ≈1000 mel, Slaney 15 (linear 3 mel per 200 Hz below).
    assert float(hz_to_mel(1000.0, htk=htk)) == pytest.approx(1000.0 if htk else 15.0, rel=1e-3)


@pytest.mark.parametrize("htk", [True, False])
def test_filterbank_peaks_at_mel_centres(htk: bool) -> None:
    n_fft, n_mels = 1024, 20
    bank = mel_filterbank(SR, n_fft, n_mels, htk=htk)
    assert bank.shape == (n_mels, n_fft // 2 + 1)
    fft_freqs = np.linspace(0, SR / 2, n_fft // 2 + 1)
    centres = mel_to_hz(np.linspace(0, hz_to_mel(SR / 2, htk=htk), n_mels + 2), htk=htk)[1:-1]
    peak_freqs = fft_freqs[bank.argmax(axis=1)]
    np.testing.assert_allclose(peak_freqs, centres, atol=SR / n_fft)  # within one FFT bin
    assert np.all(np.diff(peak_freqs) > 0) and bank.max() <= 1.0 + 1e-6
    assert np.all(bank.sum(axis=1) > 0)  # no empty filter


def test_1khz_tone_lands_in_the_right_mel_band(tmp_path: Path) -> None:
    path = tmp_path / "1k.wav"
    sf.write(path, _tone(1000.0, seconds=1.0), SR, subtype="PCM_16")
    wave, sr = read_wav(path)
    n_mels = 40
    spec = log_mel_spectrogram(wave, sr, n_mels=n_mels, n_fft=256, hop_length=128, num_frames=64)
    assert spec.shape == (n_mels, 64) and spec.dtype == np.float32
    centres = mel_to_hz(np.linspace(0, hz_to_mel(SR / 2), n_mels + 2))[1:-1]
    expected_band = int(np.abs(centres - 1000.0).argmin())
    assert int(spec[:, 10:50].mean(axis=1).argmax()) == expected_band


def test_log_mel_fixed_length_crop_and_centred_pad() -> None:
    kw = dict(n_mels=16, n_fft=256, hop_length=128, num_frames=64)
    long = log_mel_spectrogram(_tone(500, seconds=2.0), SR, **kw)
    short = log_mel_spectrogram(_tone(500, seconds=0.25), SR, **kw)
    assert long.shape == short.shape == (16, 64)
    floor = np.log(LOG_EPS)
    # 0.25 s → 16 frames, centred: padding (silence floor) on both sides, signal in the middle.
    assert np.allclose(short[:, :20], floor) and np.allclose(short[:, -20:], floor)
    assert short[:, 32].max() > floor + 5
    assert np.isfinite(long).all() and long.max(axis=0).min() > floor + 5  # a 2 s tone fills every cropped frame
