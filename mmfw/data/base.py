"""The datamodule contract: what every mmfw datamodule offers the module, the run records and the robustness sweep.

A datamodule holds each split as a :class:`TensorDictDataset` (decoded samples in memory) and says what the model
needs to know: its ``modalities`` (the mask columns, in order), the ``task``, each modality's ``kind`` and the
data-dependent arguments of its encoder (``encoder_inputs``). AV-digits and the manifest datamodule keep only what
differs: how the samples are built and which modalities can be decoded again under a corruption.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mmfw.contracts import MASK_KEY, TARGET_KEY, TaskSpec
from mmfw.data.loaders import split_loader

SPLITS = ("train", "val", "test")


class TensorDictDataset(Dataset):
    """In-memory samples ``{modality: inputs[m][i], "mask": mask[i] (M,), "target": target[i]}``.

    ``inputs[m]`` is a tensor ``(N, ...)`` or a dict of them (tabular); ``views[m]``, when given, turns a stored
    sample into the one served (images are stored as uint8 and served as float in [0, 1]).
    """

    def __init__(
        self,
        inputs: Mapping[str, Any],
        mask: torch.Tensor,
        target: torch.Tensor,
        views: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> None:
        if mask.shape != (len(target), len(inputs)):
            raise ValueError(f"mask must be (N, M) = ({len(target)}, {len(inputs)}), got {tuple(mask.shape)}")
        self.inputs, self.mask, self.target, self.views = dict(inputs), mask, target, dict(views or {})

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {}
        for name, value in self.inputs.items():
            if isinstance(value, dict):
                sample[name] = {key: tensor[index] for key, tensor in value.items()}
            else:
                view = self.views.get(name)
                sample[name] = value[index] if view is None else view(value[index])
        sample[MASK_KEY] = self.mask[index]
        sample[TARGET_KEY] = self.target[index]
        return sample

    def replace(self, modality: str, inputs: Any, present: torch.Tensor | None = None) -> TensorDictDataset:
        """The same samples with ``modality``'s inputs (and, if given, its mask column) replaced."""
        mask = self.mask
        if present is not None:
            mask = mask.clone()
            mask[:, list(self.inputs).index(modality)] = present
        return TensorDictDataset({**self.inputs, modality: inputs}, mask, self.target, self.views)


class MultimodalDataModule(pl.LightningDataModule):
    """The base of every datamodule: loaders over :meth:`dataset`, and the contract the rest of mmfw reads.

    A subclass sets ``modalities`` (via this constructor) and implements :meth:`dataset`, :attr:`task`,
    :attr:`encoder_inputs` and :attr:`modality_kinds`; it overrides :meth:`corrupted_dataset` for the modalities it
    can decode again, and fills ``skipped`` / ``truncated`` when it drops rows or cuts texts.

    Args:
        modalities: the modalities this run uses, in mask-column order.
        batch_size: per-device batch size.
        num_workers: dataloader worker processes.
        pin_memory: pin batches in page-locked memory (faster host→GPU copies).
        seed: seed of the training batches' shuffling order.
    """

    def __init__(
        self, *, modalities: Sequence[str], batch_size: int, num_workers: int, pin_memory: bool, seed: int
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.batch_size, self.num_workers, self.pin_memory, self.seed = batch_size, num_workers, pin_memory, seed
        self.skipped: list[dict[str, Any]] = []  # bad rows dropped (file, row, column, reason): skipped_samples.json
        self.truncated: dict[str, int] = {}  # per text modality, the texts cut to the tokenizer's length
        # {"fold": i, "folds": K} when the split is a cross-validation fold (AV-digits adds "val_speaker", a name)
        self.fold: dict[str, Any] | None = None

    # ------------------------------------------------------------------ what a subclass provides
    @property
    def task(self) -> TaskSpec:
        """What to predict, found in the data."""
        raise NotImplementedError

    @property
    def encoder_inputs(self) -> dict[str, dict[str, Any]]:
        """Per modality, the data-dependent keyword arguments of its encoder (``in_chans``, ``vocab_size``...)."""
        raise NotImplementedError

    @property
    def modality_kinds(self) -> dict[str, str]:
        """``{modality: kind}`` (``image``, ``audio``, ``text`` or ``tabular``, :data:`mmfw.contracts.KINDS`)."""
        raise NotImplementedError

    def dataset(self, split: str) -> TensorDictDataset:
        """The samples of ``split`` (``train``, ``val`` or ``test``), in a fixed order."""
        raise NotImplementedError

    def corrupted_dataset(self, split: str, modality: str, corrupt: Callable[..., Any]) -> TensorDictDataset:
        """``split``'s samples, in order, with ``modality`` decoded again through ``corrupt`` (robustness)."""
        raise ValueError(f"{type(self).__name__} decodes no modality again, so it cannot corrupt {modality!r}")

    def raw_texts(self, split: str, modality: str) -> list[str] | None:
        """The raw strings of text ``modality`` in dataset order ("" where missing); None when only ids are kept."""
        return None

    def decode_new_rows(self, manifest: str | Path, *, on_bad_sample: str | None = None) -> Any:
        """Another file's rows through this datamodule's preprocessing, for prediction (``mmfw-predict``): a
        :class:`~mmfw.data.manifest.new_rows.NewRows`. Only a datamodule that reads a manifest can."""
        raise TypeError(
            f"{type(self).__name__} reads no manifest, so it cannot decode new rows from {manifest}: mmfw-predict "
            "needs a run trained with datamodule=manifest on a manifest of the same columns"
        )

    def write_splits(self, path: Path) -> None:
        """Write which source row went to which split (a datamodule with source rows overrides this)."""

    def save_preprocessing(self, path: Path) -> None:
        """Write the training split's fitted preprocessing that :meth:`decode_new_rows` needs, so that a run folder
        predicts alone (a datamodule that decodes new rows overrides this)."""

    # ------------------------------------------------------------------ loaders
    def loader(self, dataset: Dataset, *, shuffle: bool, pin_memory: bool | None = None) -> DataLoader:
        """Batches of ``dataset`` that carry this datamodule's modality order (``batch["modalities"]``)."""
        return split_loader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory if pin_memory is None else pin_memory,
            modalities=self.modalities,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("test"), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("test"), shuffle=False)

    def corrupted_dataloader(self, split: str, modality: str, corrupt: Callable[..., Any]) -> DataLoader:
        """Unshuffled batches of :meth:`corrupted_dataset` (what the decode-level corruptions ask for)."""
        if modality not in self.modalities:
            raise ValueError(f"{modality!r} is not a modality of this run ({self.modalities})")
        return self.loader(self.corrupted_dataset(split, modality, corrupt), shuffle=False, pin_memory=False)


class WrappedDataModule(pl.LightningDataModule):
    """A datamodule that serves other batches over a run's datamodule (``inner``, a :class:`MultimodalDataModule`):
    frozen-encoder features added (:class:`mmfw.feature_cache.FeatureCacheDataModule`), or pairs of its samples
    (:class:`mmfw.objectives.pairs.PairDataModule`).

    The model, the run records and the robustness sweep read the datamodule contract from the wrapper, so it offers
    the inner datamodule's (``modalities``, ``task``, ``encoder_inputs``, ``modality_kinds``, ``skipped``,
    ``truncated``, ``fold``, ``write_splits``, ``save_preprocessing``, ``raw_texts``) and forwards Lightning's data
    hooks to it; a subclass provides its loaders and overrides what it serves differently.
    """

    def __init__(self, inner: MultimodalDataModule) -> None:
        super().__init__()
        self.inner = inner

    # ------------------------------------------------------------------ the datamodule contract: the inner one's
    @property
    def modalities(self) -> list[str]:
        return self.inner.modalities

    @property
    def task(self) -> TaskSpec:
        return self.inner.task

    @property
    def encoder_inputs(self) -> dict[str, dict[str, Any]]:
        return self.inner.encoder_inputs

    @property
    def modality_kinds(self) -> dict[str, str]:
        return self.inner.modality_kinds

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return self.inner.skipped

    @property
    def truncated(self) -> dict[str, int]:
        return self.inner.truncated

    @property
    def fold(self) -> dict[str, Any] | None:
        return self.inner.fold

    def write_splits(self, path: Path) -> None:
        self.inner.write_splits(path)

    def save_preprocessing(self, path: Path) -> None:
        self.inner.save_preprocessing(path)

    def raw_texts(self, split: str, modality: str) -> list[str] | None:
        return self.inner.raw_texts(split, modality)

    # ------------------------------------------------------------------ lightning: the inner one's
    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    def teardown(self, stage: str | None = None) -> None:
        self.inner.teardown(stage)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.inner.on_before_batch_transfer(batch, dataloader_idx)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return self.inner.transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.inner.on_after_batch_transfer(batch, dataloader_idx)
