"""AV-digits: MNIST images paired with spoken digits (FSDD), built the way AV-MNIST is built.

AV-MNIST: Vielzeuf et al., "CentralNet: a Multilayer Approach for Multimodal Fusion", ECCV-W 2018; also MultiBench.
Each modality is made weak on purpose so that fusion pays: images lose the leading PCA components that carry
``pca_variance_removed`` of the variance, and recordings get white noise at ``snr_db``. Every image is paired with
a recording of the same digit; validation and test recordings come from speakers that training never hears.

Samples: ``{"image": (1, 28, 28) float, "audio": (1, n_mels, num_frames) float, "mask": (M,) bool, "target": long}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfw.contracts import TaskSpec
from mmfw.data.audio import add_white_noise, fix_length, log_mel_spectrogram
from mmfw.data.avdigits_build import RMS, SPLIT_CODE, build_avdigits, load_recordings
from mmfw.data.base import SPLITS, MultimodalDataModule, TensorDictDataset
from mmfw.data.download import RawDataInfo, ensure_raw_data

AVAILABLE_MODALITIES = ("image", "audio")
_CACHE_VERSION = 2  # bump when the construction changes, so old caches are not reused


class AVDigitsDataModule(MultimodalDataModule):
    """Audio-visual digits from real MNIST + FSDD; processed arrays are cached as npz.

    Args:
        raw_dir: folder with ``fsdd/recordings/*.wav`` and ``mnist/mnist.npz`` (downloaded there if missing).
        cache_dir: writable folder for the processed arrays, one sub-folder per construction.
        modalities: any of ``image``, ``audio``, in the order of the mask columns; None: both.
        train_size: training pairs; images from MNIST train.
        val_size: validation pairs; other MNIST train images than the training ones.
        test_size: test pairs; images from MNIST test.
        pca_variance_removed: share of image variance removed by dropping leading principal components (PCA fit on
            the training images); 0 keeps the images whole.
        snr_db: signal-to-noise ratio of the white noise added to each recording, relative to its power.
        test_speaker: FSDD speaker whose recordings make the test pairs (and only those).
        val_speaker: FSDD speaker whose recordings make the validation pairs (and only those).
        fold: speaker cross-validation: the validation speaker is the ``fold``-th (in name order) of the speakers
            other than ``test_speaker`` (FSDD: 5 of them, folds 0-4), instead of ``val_speaker``. None: no folds.
        n_mels: mel bands of the spectrogram.
        num_frames: spectrogram frames; ``(num_frames - 1) * hop_length`` samples (~1 s at the defaults).
        n_fft: STFT window length in samples.
        hop_length: STFT hop in samples.
        sample_rate: recordings are resampled to this rate.
        batch_size: per-device batch size.
        num_workers: dataloader worker processes.
        pin_memory: pin batches in page-locked memory (faster host→GPU copies).
        seed: fixes image choice, pairing and noise; the same seed gives the same data on every machine.
        download: download missing raw data (else a missing file is an error).
    """

    def __init__(
        self,
        *,
        raw_dir: str,
        cache_dir: str,
        modalities: list[str] | None,
        train_size: int = 10_000,
        val_size: int = 2_000,
        test_size: int = 5_000,
        pca_variance_removed: float = 0.99,
        snr_db: float = 10.0,
        test_speaker: str = "yweweler",
        val_speaker: str = "nicolas",
        fold: int | None = None,
        n_mels: int = 40,
        num_frames: int = 64,
        n_fft: int = 256,
        hop_length: int = 128,
        sample_rate: int = 8000,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 1234,
        download: bool = True,
    ) -> None:
        modalities = list(AVAILABLE_MODALITIES if modalities is None else modalities)
        unknown = [m for m in modalities if m not in AVAILABLE_MODALITIES]
        if unknown or not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"config key `modalities` = {modalities}: unknown or repeated modality {unknown or modalities}; "
                f"the AV-digits datamodule has {list(AVAILABLE_MODALITIES)} (e.g. modalities=[image,audio])."
            )
        if not 0.0 <= pca_variance_removed < 1.0:
            raise ValueError(f"datamodule.pca_variance_removed must be in [0, 1), got {pca_variance_removed}")
        if fold is not None and fold < 0:
            raise ValueError(f"datamodule.fold must be >= 0 (the index of the validation speaker), got {fold}")
        if fold is None and test_speaker == val_speaker:
            raise ValueError(f"datamodule.val_speaker and datamodule.test_speaker must differ, both are {test_speaker}")
        for key, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if value < 1:
                raise ValueError(f"datamodule.{key} must be >= 1, got {value}")
        super().__init__(
            modalities=modalities, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed
        )
        self.raw_dir, self.cache_dir, self.download = raw_dir, cache_dir, download
        # Everything that changes the processed arrays; hashed into the cache folder name.
        self.build_params = dict(
            train_size=train_size,
            val_size=val_size,
            test_size=test_size,
            pca_variance_removed=float(pca_variance_removed),
            snr_db=float(snr_db),
            test_speaker=test_speaker,
            val_speaker=val_speaker if fold is None else None,
            n_mels=n_mels,
            num_frames=num_frames,
            n_fft=n_fft,
            hop_length=hop_length,
            sample_rate=sample_rate,
            seed=seed,
            # only when set, so that the caches of runs without folds keep their keys
            **({} if fold is None else {"fold": int(fold)}),
        )
        self.datasets: dict[str, TensorDictDataset] = {}
        self.meta: dict = {}

    @property
    def task(self) -> TaskSpec:
        """The digit, ten classes."""
        return TaskSpec("multiclass", 10, [str(d) for d in range(10)])

    @property
    def encoder_inputs(self) -> dict[str, dict[str, Any]]:
        """Grey images and one-channel spectrograms."""
        return {m: {"in_chans": 1} for m in self.modalities}

    @property
    def modality_kinds(self) -> dict[str, str]:
        """``{modality: kind}``: here the modality names are their kinds."""
        return {m: m for m in self.modalities}

    # ------------------------------------------------------------------ cache
    def _raw_info(self) -> RawDataInfo:
        return ensure_raw_data(self.raw_dir, self.cache_dir, download=self.download)

    def processed_dir(self, info: RawDataInfo) -> Path:
        """``<cache_dir>/processed-<hash of the construction parameters and the raw data digests>``."""
        key = json.dumps({"version": _CACHE_VERSION, "data": info.content_key, **self.build_params}, sort_keys=True)
        return Path(self.cache_dir) / f"processed-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def _ensure_processed(self) -> Path:
        info = self._raw_info()
        folder = self.processed_dir(info)
        if not (folder / "meta.json").is_file():  # meta.json is written last: its presence means complete
            start = time.perf_counter()
            arrays, meta = build_avdigits(
                recordings_dir=Path(info.recordings_dir), mnist_path=Path(info.mnist_path), **self.build_params
            )
            folder.mkdir(parents=True, exist_ok=True)
            # Ranks or jobs may build the same folder at once: each writes its own temp file and renames it
            # into place; the contents are identical because the build is deterministic.
            for split, split_arrays in arrays.items():
                tmp = folder / f".{split}.{uuid.uuid4().hex}.npz"
                np.savez(tmp, **split_arrays)
                os.replace(tmp, folder / f"{split}.npz")
            meta.update(build_params=self.build_params, raw=info.content_key, build_seconds=time.perf_counter() - start)
            tmp = folder / f".meta.{uuid.uuid4().hex}.json"
            tmp.write_text(json.dumps(meta, indent=2))
            os.replace(tmp, folder / "meta.json")
        return folder

    # ------------------------------------------------------------ lightning
    def prepare_data(self) -> None:
        """Download (if needed), verify and process the data once; later runs find it in the cache."""
        self._ensure_processed()

    def setup(self, stage: str | None = None) -> None:
        folder = self._ensure_processed()
        self.meta = json.loads((folder / "meta.json").read_text())
        if "fold" in self.build_params:
            self.fold = {**self.meta["fold"], "val_speaker": self.meta["speakers"]["val"][0]}
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, SPLITS):
            if split in self.datasets:
                continue
            with np.load(folder / f"{split}.npz") as data:  # reads only the arrays asked for
                inputs = {m: torch.from_numpy(data[m]) for m in self.modalities}
                target = torch.from_numpy(data["target"]).long()
            mask = torch.ones(len(target), len(self.modalities), dtype=torch.bool)  # every pair has every modality
            self.datasets[split] = TensorDictDataset(inputs, mask, target)

    def dataset(self, split: str) -> TensorDictDataset:
        if split not in self.datasets:
            raise RuntimeError(f"call setup() before asking for the {split} dataloader")
        return self.datasets[split]

    def decode_new_rows(self, manifest: str | Path, *, on_bad_sample: str | None = None) -> Any:
        """Refused: AV-digits is built from MNIST and FSDD, not read from files a user can add rows to."""
        raise TypeError(
            f"an AV-digits run cannot read new rows ({manifest}): it was trained on AV-digits built in memory, not "
            "on a manifest. Export AV-digits as files (python -m mmfw.tools.export_avdigits --out "
            "data/avdigits_manifest), train on them (mmfw-train experiment=manifest_digits) and predict with that "
            "run; new rows then take the columns of data/avdigits_manifest/manifest.csv"
        )

    # ------------------------------------------------------------ waveforms (mmfw.robustness, mmfw.tools)

    def pair_waves(self, split: str, *, noisy: bool = True) -> tuple[list[np.ndarray], list[str]]:
        """The waveforms the split's spectrograms are computed from, in pair order — each recording RMS-normalised,
        centred in ``(num_frames - 1) * hop_length`` samples and, if ``noisy``, with the data set's ``snr_db`` noise
        (the same draws as :func:`build_avdigits`) — and each pair's recording file name."""
        if not hasattr(self, "_pair_waves_cache"):
            self._pair_waves_cache: dict[tuple[str, bool], tuple[list[np.ndarray], list[str]]] = {}
        if (split, noisy) not in self._pair_waves_cache:
            p = self.build_params
            with np.load(self._ensure_processed() / f"{split}.npz") as data:
                rec_index = data["recording"]
            waves, _, _, names = load_recordings(Path(self._raw_info().recordings_dir), p["sample_rate"])
            length = (p["num_frames"] - 1) * p["hop_length"]
            out = []
            for i, r in enumerate(rec_index):
                wave = fix_length(waves[r], length)
                if noisy:
                    noise_rng = np.random.default_rng([p["seed"], SPLIT_CODE[split], i])
                    wave = add_white_noise(wave, p["snr_db"], noise_rng, signal_power=RMS**2)
                out.append(wave)
            self._pair_waves_cache[(split, noisy)] = (out, [names[r] for r in rec_index])
        return self._pair_waves_cache[(split, noisy)]

    def corrupted_dataset(self, split: str, modality: str, corrupt: Callable[..., np.ndarray]) -> TensorDictDataset:
        """``split``'s pairs, in order, with the audio recomputed from ``corrupt(wave, *, sample_rate, signal_power,
        index) -> wave`` applied to each noisy waveform (``signal_power``: the power every recording is normalised
        to; ``index``: the pair's position), then the log-mel and the training-split band standardisation."""
        if modality != "audio" or modality not in self.modalities:
            raise ValueError(f"AV-digits decodes only the audio modality again, not {modality!r}")
        if split not in self.datasets:
            raise RuntimeError(f"call setup() before asking for the corrupted {split} dataloader")
        p = self.build_params
        band_mean = np.asarray(self.meta["audio"]["band_mean"], dtype=np.float32)[:, None]
        band_std = np.asarray(self.meta["audio"]["band_std"], dtype=np.float32)[:, None]
        clean = self.datasets[split]
        specs = np.empty(tuple(clean.inputs["audio"].shape), dtype=np.float32)
        for i, wave in enumerate(self.pair_waves(split)[0]):
            noisy = corrupt(wave, sample_rate=p["sample_rate"], signal_power=RMS**2, index=i)
            spec = log_mel_spectrogram(noisy, p["sample_rate"], n_mels=p["n_mels"], n_fft=p["n_fft"],
                                       hop_length=p["hop_length"], num_frames=p["num_frames"])  # fmt: skip
            specs[i, 0] = (spec - band_mean) / band_std
        return clean.replace("audio", torch.from_numpy(specs))
