"""How AV-digits is built from the raw MNIST and FSDD files (:func:`build_avdigits`); the datamodule caches the result.

Every image is paired with a recording of the same digit; images lose the leading PCA components, recordings get
white noise at a fixed SNR, and validation and test recordings come from speakers that training never hears.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mmfw.data.audio import add_white_noise, fix_length, log_mel_spectrogram, read_wav, resample
from mmfw.data.base import SPLITS

SPLIT_CODE = {"train": 0, "val": 1, "test": 2}  # part of the per-pair noise seed
RMS = 0.1  # every recording is scaled to this RMS before noise is added
_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")


# ---------------------------------------------------------------------------------------------- construction
def build_avdigits(
    *,
    recordings_dir: Path,
    mnist_path: Path,
    train_size: int,
    val_size: int,
    test_size: int,
    pca_variance_removed: float,
    snr_db: float,
    test_speaker: str,
    val_speaker: str | None,
    n_mels: int,
    num_frames: int,
    n_fft: int,
    hop_length: int,
    sample_rate: int,
    seed: int,
    fold: int | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Build all three splits: ``{split: {"image": (N,1,28,28), "audio": (N,1,n_mels,T), "target": (N,)}}``, meta."""
    waves, rec_digits, rec_speakers, rec_names = load_recordings(recordings_dir, sample_rate)
    speakers = sorted(set(rec_speakers))
    folds = None
    if fold is not None:
        others = [str(s) for s in speakers if s != test_speaker]
        if fold >= len(others):
            raise ValueError(f"datamodule.fold={fold}: there are {len(others)} validation speakers {others} besides "
                             f"test_speaker={test_speaker!r}, so fold must be one of 0..{len(others) - 1}")  # fmt: skip
        val_speaker, folds = others[fold], len(others)
    for key, speaker in (("test_speaker", test_speaker), ("val_speaker", val_speaker)):
        if speaker not in speakers:
            raise ValueError(
                f"datamodule.{key}={speaker!r} has no recordings in {recordings_dir}; speakers: {speakers}"
            )
    pools = {"test": rec_speakers == test_speaker, "val": rec_speakers == val_speaker}
    pools["train"] = ~(pools["test"] | pools["val"])
    if not pools["train"].any():
        raise ValueError(f"no training speakers left once val_speaker and test_speaker are held out ({speakers})")
    rng = np.random.default_rng(seed)
    images, labels = _select_images(mnist_path, train_size, val_size, test_size, rng)
    images, image_meta = _pca_residual(images, pca_variance_removed)

    arrays: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        rec_index = _pair(labels[split], rec_digits, pools[split], rng, split)
        specs = _noisy_spectrograms([waves[r] for r in rec_index], split, seed=seed, snr_db=snr_db,
                                    sample_rate=sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                                    num_frames=num_frames)  # fmt: skip
        arrays[split] = {"image": images[split], "audio": specs, "target": labels[split].astype(np.int64)}
        arrays[split]["recording"] = rec_index.astype(np.int32)  # which file, for inspection

    # Per-mel-band standardisation with training statistics: white noise is flat in frequency, so bands differ
    # a lot in level; per band keeps every band in the network's useful range.
    train_audio = arrays["train"]["audio"]
    band_mean = train_audio.mean(axis=(0, 1, 3), keepdims=True)
    band_std = train_audio.std(axis=(0, 1, 3), keepdims=True) + 1e-6
    for split in SPLITS:
        arrays[split]["audio"] = ((arrays[split]["audio"] - band_mean) / band_std).astype(np.float32)

    meta = dict(
        image=image_meta,
        audio={"band_mean": band_mean.ravel().tolist(), "band_std": band_std.ravel().tolist()},
        speakers={s: sorted(set(rec_speakers[pools[s]].tolist())) for s in SPLITS},
        recordings=rec_names,
        sizes={s: len(arrays[s]["target"]) for s in SPLITS},
        **({} if folds is None else {"fold": {"fold": fold, "folds": folds}}),
    )
    return arrays, meta


def _noisy_spectrograms(waves: list[np.ndarray], split: str, *, seed: int, snr_db: float, sample_rate: int,
                        n_mels: int, n_fft: int, hop_length: int, num_frames: int) -> np.ndarray:  # fmt: skip
    """``(N, 1, n_mels, num_frames)`` log-mels of the split's recordings with white noise at ``snr_db``.

    Noise depends only on (seed, split, pair index) and is spread over the whole 1 s window (padding included), at a
    level set by the power of the (RMS-normalised) recording itself.
    """
    length = (num_frames - 1) * hop_length  # samples that give exactly num_frames centred STFT frames
    specs = np.empty((len(waves), 1, n_mels, num_frames), dtype=np.float32)
    for i, wave in enumerate(waves):
        noise_rng = np.random.default_rng([seed, SPLIT_CODE[split], i])
        noisy = add_white_noise(fix_length(wave, length), snr_db, noise_rng, signal_power=RMS**2)
        specs[i, 0] = log_mel_spectrogram(
            noisy, sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length, num_frames=num_frames
        )
    return specs


def _select_images(
    mnist_path: Path, train_size: int, val_size: int, test_size: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Disjoint train/val images from MNIST train, test images from MNIST test: ``(N, 784)`` float64 in [0, 1]."""
    try:
        with np.load(mnist_path) as data:
            x_train, y_train, x_test, y_test = (data[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"cannot read MNIST from {mnist_path}: {err}. Delete the file and download it again.") from err
    if train_size + val_size > len(x_train):
        raise ValueError(
            f"datamodule.train_size + datamodule.val_size = {train_size + val_size} exceeds the {len(x_train)} "
            f"MNIST training images in {mnist_path}"
        )
    if test_size > len(x_test):
        raise ValueError(f"datamodule.test_size={test_size} exceeds the {len(x_test)} MNIST test images")
    perm = rng.permutation(len(x_train))
    index = {"train": perm[:train_size], "val": perm[train_size : train_size + val_size]}
    test_index = rng.permutation(len(x_test))[:test_size]
    flat = {s: x_train[i].reshape(len(i), -1) / 255.0 for s, i in index.items()}
    flat["test"] = x_test[test_index].reshape(test_size, -1) / 255.0
    labels = {s: y_train[i] for s, i in index.items()}
    labels["test"] = y_test[test_index]
    return flat, {s: labels[s].astype(np.int64) for s in SPLITS}


def _pca_residual(flat: dict[str, np.ndarray], variance_removed: float) -> tuple[dict[str, np.ndarray], dict]:
    """Remove the leading principal components (fit on train) that carry ``variance_removed`` of the variance.

    ``r = (x - μ) - V_k V_kᵀ (x - μ)``, then divided by the training residual's standard deviation (one scalar,
    so relative pixel scales survive) → ``(N, 1, 28, 28)`` float32.
    """
    train = flat["train"]
    mean = train.mean(axis=0)
    centred = train - mean
    eigval, eigvec = np.linalg.eigh(centred.T @ centred)  # ascending
    eigval, eigvec = eigval[::-1].clip(min=0.0), eigvec[:, ::-1]
    share = np.cumsum(eigval) / eigval.sum()
    k = 0 if variance_removed <= 0 else int(np.searchsorted(share, variance_removed) + 1)
    basis = eigvec[:, :k]  # (784, k)
    out = {}
    for split, x in flat.items():
        c = x - mean
        out[split] = c - (c @ basis) @ basis.T
    scale = float(out["train"].std())
    if scale < 1e-6 * float(centred.std()):
        raise ValueError(
            f"datamodule.pca_variance_removed={variance_removed} removes {k} components, which leaves no variance in "
            f"the {len(train)} training images: lower it or raise datamodule.train_size"
        )
    side = int(round(np.sqrt(train.shape[1])))
    images = {s: (r / scale).reshape(len(r), 1, side, side).astype(np.float32) for s, r in out.items()}
    return images, {
        "pca_components_removed": k,
        "residual_std": scale,
        "variance_removed": float(share[k - 1]) if k else 0.0,
    }


def load_recordings(
    recordings_dir: Path, sample_rate: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """Read every ``{digit}_{speaker}_{take}.wav``; returns waves, digits, speakers and file names (sorted)."""
    paths = sorted(Path(recordings_dir).glob("*.wav"), key=lambda p: p.name)
    waves, digits, speakers = [], [], []
    for path in paths:
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path}: expected FSDD file names {{digit}}_{{speaker}}_{{take}}.wav")
        wave = resample(*read_wav(path), sample_rate)
        # Recording levels differ ~10x between FSDD speakers (theo and yweweler are quiet): a fixed RMS keeps
        # loudness from being a speaker cue that does not transfer to the held-out speakers.
        waves.append(wave * (RMS / max(float(np.sqrt(np.mean(np.square(wave)))), 1e-8)))
        digits.append(int(match.group(1)))
        speakers.append(match.group(2))
    return waves, np.array(digits), np.array(speakers), [p.name for p in paths]


def _pair(
    labels: np.ndarray, rec_digits: np.ndarray, pool: np.ndarray, rng: np.random.Generator, split: str
) -> np.ndarray:
    """Give each image a recording of its digit from ``pool``, cycling through shuffled recordings so that each
    recording is used equally often (±1) within a split."""
    out = np.empty(len(labels), dtype=np.int64)
    for digit in range(10):
        where = np.flatnonzero(labels == digit)
        if len(where) == 0:
            continue
        candidates = np.flatnonzero(pool & (rec_digits == digit))
        if len(candidates) == 0:
            raise ValueError(f"no recording of digit {digit} from the {split} speakers: cannot pair {split} images")
        rounds = -(-len(where) // len(candidates))
        order = np.concatenate([rng.permutation(candidates) for _ in range(rounds)])
        out[where] = order[: len(where)]
    return out
