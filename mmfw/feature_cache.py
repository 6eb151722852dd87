"""Frozen-feature cache: a frozen encoder's outputs are computed once per (weights, data, preprocessing), kept on disk
under ``paths.cache_dir/features`` and read by every later epoch and run.

The contract:

* An encoder is **frozen** when it has parameters and none of them is trained: ``HFTextEncoder(trainable=false)``
  (``encoder/text=minilm``), or any encoder configured with the common key ``encoder.<modality>.frozen=true``
  (:func:`freeze`). A frozen encoder always runs in eval mode (no dropout, fixed batch-norm statistics), so its
  output is a function of its input alone; that is what makes the cache exact.
* :class:`FeatureCacheDataModule` wraps the run's datamodule. Its train/val/test loaders yield the wrapped
  datamodule's batches unchanged plus ``batch["features"] = {modality: encoder output}`` for the frozen modalities;
  :class:`mmfw.module.MultimodalModule` uses those instead of running the encoder. Masks, ``model.modality_dropout``
  and the test-time modality ablation act on the mask as before: the fusion still receives features + mask.
* The model keeps the real encoder (its weights stay in checkpoints, ``mmfw-eval`` rebuilds the same model), and
  the robustness sweep drops ``batch["features"]`` (:func:`mmfw.robustness.sweep.score`), so corrupted inputs always
  go through the real encoder.
* A split's features are keyed by the encoder (class, config, a digest of every weight) and a digest of that split's
  encoder inputs exactly as the datamodule delivers them, in order: changed data, preprocessing (image size, tokenizer,
  ``max_text_len``...) or kept rows (``on_bad_sample: skip``) change the key. The key is computed when the split's
  loader is requested (inside ``trainer.fit``/``test``), i.e. after any checkpoint has been loaded into the model.
* One writer: a process that misses takes an exclusive lock on ``<key>.lock`` and computes; DDP ranks (and parallel
  sweep jobs) that miss at the same time wait on that lock and then read the file, which is written atomically.
  Waiting happens outside any collective, so the DDP timeout does not bound it.
* Features are computed in float32 (no autocast); with ``trainer.precision=bf16-mixed`` the cached run is the more
  precise one. Set ``feature_cache=false`` to run the frozen encoders every step.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from mmfw.contracts import FEATURES_KEY
from mmfw.data.base import MultimodalDataModule, WrappedDataModule

log = logging.getLogger(__name__)

_VERSION = 1
SPLITS = ("train", "val", "test")


def freeze(encoder: nn.Module) -> nn.Module:
    """``encoder.<modality>.frozen=true``: no parameter is trained; :func:`is_frozen` is then true."""
    encoder.requires_grad_(False)
    return encoder.eval()


def is_frozen(encoder: nn.Module) -> bool:
    """Has parameters and trains none of them (an encoder without parameters is cheap: nothing to cache)."""
    parameters = list(encoder.parameters())
    return bool(parameters) and not any(p.requires_grad for p in parameters)


def _update_with(digest: Any, value: Any) -> None:
    """Feed a tensor, or a dict of tensors (tabular inputs), into ``digest``: dtype, shape and bytes."""
    if isinstance(value, Mapping):
        for key in sorted(value):
            digest.update(str(key).encode())
            _update_with(digest, value[key])
        return
    tensor = value.detach().to("cpu").contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def encoder_digest(encoder: nn.Module, config: Mapping[str, Any]) -> str:
    """Class, config (pooling, returns_tokens... change the output without changing a weight) and every weight."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(encoder).__module__}.{type(encoder).__qualname__}".encode())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        _update_with(digest, tensor)
    return digest.hexdigest()


class _FeaturesCollate:
    """Collates the wrapped samples with the datamodule's own ``collate_fn``, then stacks the features."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list[tuple[dict[str, Any], dict[str, torch.Tensor]]]) -> dict[str, Any]:
        batch = self.collate([sample for sample, _ in samples])
        batch[FEATURES_KEY] = {m: torch.stack([f[m] for _, f in samples]) for m in samples[0][1]}
        return batch


class FeatureDataset(Dataset):
    """The split's dataset with row ``i`` of each modality's precomputed features attached to sample ``i``."""

    def __init__(self, dataset: Dataset, features: Mapping[str, torch.Tensor]) -> None:
        self.dataset, self.features = dataset, dict(features)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return self.dataset[index], {m: f[index] for m, f in self.features.items()}


class FeatureCacheDataModule(WrappedDataModule):
    """The run's datamodule with the frozen encoders' outputs added to its train/val/test batches.

    It offers the wrapped datamodule's contract (:class:`mmfw.data.base.WrappedDataModule`); its datasets,
    corrupted loaders and raw texts come from it too and carry no features.

    Args:
        datamodule: the run's datamodule, set up.
        encoders: the frozen encoders, by modality (the model's own modules: their weights are digested when a
            split's loader is requested).
        configs: each encoder's resolved config, part of the key.
        cache_dir: where feature files live (``paths.cache_dir/features``).
    """

    def __init__(
        self,
        datamodule: MultimodalDataModule,
        *,
        encoders: Mapping[str, nn.Module],
        configs: Mapping[str, Mapping[str, Any]],
        cache_dir: str | Path,
    ) -> None:
        super().__init__(datamodule)
        self.encoders, self.configs, self.cache_dir = dict(encoders), dict(configs), Path(cache_dir)
        self.lookups: list[dict[str, Any]] = []  # one record per (split, modality) looked up: key, hit, seconds

    def dataset(self, split: str) -> Dataset:
        return self.inner.dataset(split)

    def corrupted_dataloader(self, split: str, modality: str, corrupt: Callable[..., Any]) -> DataLoader:
        return self.inner.corrupted_dataloader(split, modality, corrupt)

    def describe(self) -> dict[str, Any]:
        """What run.json records: which modalities read cached features, from where, and each lookup."""
        return {"modalities": sorted(self.encoders), "dir": str(self.cache_dir), "lookups": self.lookups}

    # ------------------------------------------------------------------ loaders: the inner one's, with features
    def train_dataloader(self) -> DataLoader:
        return self._with_features("train", self.inner.train_dataloader())

    def val_dataloader(self) -> DataLoader:
        return self._with_features("val", self.inner.val_dataloader())

    def test_dataloader(self) -> DataLoader:
        return self._with_features("test", self.inner.test_dataloader())

    def predict_dataloader(self) -> DataLoader:
        return self._with_features("test", self.inner.predict_dataloader())

    # ------------------------------------------------------------------ the cache
    def _with_features(self, split: str, loader: DataLoader) -> DataLoader:
        """``loader`` over the same samples, in the same order (its own sampler), with the features attached."""
        features = {m: self.features(split, m, loader) for m in self.encoders}
        return DataLoader(
            FeatureDataset(loader.dataset, features),
            batch_size=loader.batch_size,
            sampler=loader.sampler,
            num_workers=loader.num_workers,
            collate_fn=_FeaturesCollate(loader.collate_fn or default_collate),
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            worker_init_fn=loader.worker_init_fn,
            persistent_workers=loader.persistent_workers,
            generator=loader.generator,
        )

    def features(self, split: str, modality: str, loader: DataLoader) -> torch.Tensor:
        """``(N, ...)`` outputs of the frozen encoder for the ``N`` samples of ``loader.dataset``, in index order."""
        start = time.perf_counter()
        encoder = self.encoders[modality]
        ordered = _ordered(loader)
        key = _key(encoder_digest(encoder, self.configs[modality]), ordered, modality)
        path = self.cache_dir / f"{modality}-{key}.pt"
        features, hit = _read(path, len(loader.dataset)), True
        if features is None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one writer; the others wait here, then read its file
                try:
                    features = _read(path, len(loader.dataset))
                    if features is None:
                        features, hit = _compute(encoder, ordered, modality), False
                        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                        torch.save(features, tmp)
                        os.replace(tmp, path)  # atomic: a reader never sees half a file
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        seconds = round(time.perf_counter() - start, 3)
        self.lookups.append({"split": split, "modality": modality, "key": key, "hit": hit, "seconds": seconds})
        log.info(
            "frozen-feature cache %s for %s/%s: %s %s (%.1f s)",
            "hit" if hit else "miss (computed)", split, modality, tuple(features.shape), path, seconds,
        )  # fmt: skip
        return features


def _ordered(loader: DataLoader) -> DataLoader:
    """The loader's samples in index order, batched by its own collate function."""
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size or 64,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn or default_collate,
        generator=torch.Generator(),  # its own: a cached run draws the same global random numbers as an uncached one
    )


def _key(encoder_key: str, ordered: DataLoader, modality: str) -> str:
    """Encoder digest + a digest of the split's inputs for ``modality`` as the datamodule delivers them."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{_VERSION}:{encoder_key}:{len(ordered.dataset)}".encode())
    for batch in ordered:
        _update_with(digest, batch[modality])
    return digest.hexdigest()


def _read(path: Path, rows: int) -> torch.Tensor | None:
    """The cached features, or None when absent or unusable (a damaged file is recomputed, never trusted)."""
    if not path.is_file():
        return None
    try:
        features = torch.load(path, weights_only=True)
    except Exception as err:
        log.warning("ignoring unreadable feature cache %s (%s); computing again", path, err)
        return None
    if not isinstance(features, torch.Tensor) or features.shape[0] != rows:
        log.warning("ignoring feature cache %s: it does not hold %d rows; computing again", path, rows)
        return None
    return features


@torch.inference_mode()
def _compute(encoder: nn.Module, ordered: DataLoader, modality: str) -> torch.Tensor:
    """The encoder's outputs over the split in eval mode, in float32, on the encoder's device, returned on CPU."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    try:
        outputs = [encoder(move_data_to_device(batch[modality], device)).float().cpu() for batch in ordered]
    finally:
        encoder.train(was_training)
    return torch.cat(outputs)


def wrap_frozen(
    datamodule: pl.LightningDataModule,
    encoders: Mapping[str, nn.Module],
    *,
    configs: Mapping[str, Mapping[str, Any]],
    cache_dir: str | Path,
) -> pl.LightningDataModule:
    """``datamodule`` wrapped so that the frozen ``encoders`` read cached features; unchanged when none is frozen."""
    frozen = {m: e for m, e in encoders.items() if is_frozen(e)}
    if not frozen:
        return datamodule
    log.info(
        "frozen-feature cache: modalities %s read precomputed encoder outputs from %s (feature_cache=false to "
        "run the encoders every step; robustness sweeps always run them)", sorted(frozen), cache_dir,
    )  # fmt: skip
    return FeatureCacheDataModule(
        datamodule, encoders=frozen, configs={m: configs[m] for m in frozen}, cache_dir=cache_dir
    )
