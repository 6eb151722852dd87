"""The pair datamodule of ``objective=preference``: pairs (chosen, rejected) of a sample manifest's rows.

It wraps the run's sample datamodule (a :class:`~mmfw.data.manifest.ManifestDataModule`, set up) and serves, per
split, pairs of that split's samples. A batch of ``N`` pairs is one sample batch of ``2N`` rows — the ``N`` chosen
samples, then the ``N`` rejected ones — plus ``pair_target`` ``(N,)`` (1, or ½ for a kept tie) and ``pair_margin``
``(N,)``: the module runs its encoders, fusion and reward head on it as on any batch, so modality dropout, missing
modalities and the modality ablation work unchanged.

Pairs come from a pairs file (``file``: ``chosen``/``rejected`` ids, :func:`~mmfw.objectives.preference.read_pairs`)
or from a rating column (``from_column``, :func:`~mmfw.objectives.preference.pairs_from_ratings`), always within one
split: a pair whose samples the split put apart is dropped (and counted in the log), so no test sample is seen in
training through its partner.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from mmfw.contracts import MODALITIES_KEY
from mmfw.data.base import SPLITS, WrappedDataModule
from mmfw.data.manifest.reader import read_manifest
from mmfw.objectives.preference import PairsError, Ties, pairs_from_ratings, read_pairs

if TYPE_CHECKING:
    from mmfw.data.manifest import ManifestDataModule

log = logging.getLogger(__name__)

PAIR_TARGET_KEY = "pair_target"
PAIR_MARGIN_KEY = "pair_margin"


class PairDataset(Dataset):
    """Pairs of a split's samples: item ``i`` is ``(chosen sample, rejected sample, target, margin)``."""

    def __init__(self, samples: Dataset, pairs: pd.DataFrame) -> None:
        self.samples = samples
        self.chosen = pairs["chosen"].to_numpy(dtype=np.int64)
        self.rejected = pairs["rejected"].to_numpy(dtype=np.int64)
        self.target = torch.tensor(pairs["target"].to_numpy(), dtype=torch.float32)
        self.margin = torch.tensor(pairs["margin"].to_numpy(), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
        return (self.samples[int(self.chosen[index])], self.samples[int(self.rejected[index])], self.target[index],
                self.margin[index])  # fmt: skip


class PairCollate:
    """``N`` pairs → one batch of the ``N`` chosen then the ``N`` rejected samples, plus the pairs' target and
    margin (a class, not a closure, so worker processes can pickle it)."""

    def __init__(self, modalities: Sequence[str]) -> None:
        self.modalities = tuple(modalities)

    def __call__(self, items: list[tuple[Any, Any, torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        batch = default_collate([c for c, _, _, _ in items] + [r for _, r, _, _ in items])
        batch[MODALITIES_KEY] = self.modalities
        batch[PAIR_TARGET_KEY] = torch.stack([t for _, _, t, _ in items])
        batch[PAIR_MARGIN_KEY] = torch.stack([m for _, _, _, m in items])
        return batch


class PairDataModule(WrappedDataModule):
    """Pairs of a manifest's samples, per split (see the module docstring).

    Args:
        samples: the sample datamodule (``datamodule``), a ManifestDataModule.
        file: a pairs manifest: columns ``chosen``, ``rejected`` (sample ids), optional ``target``, ``margin``.
        id_column: the manifest column the pairs file's ids name; None: the manifest's data row number (1-based, as
            in the run's ``splits.csv``).
        from_column: instead of ``file``: a rating column; within a group the higher-rated row is chosen.
        order: the ratings from worst to best when they are labels (``[negative, neutral, positive]``).
        group: manifest columns a rating pair shares (a product, a condition); pairs never cross splits anyway.
        ties: ``drop`` or ``half`` (a tied pair kept once with target ½), see :func:`pairs_from_ratings`.
        max_pairs: at most this many pairs per split (a random subset, seed 0: the pairs of a group grow with its
            size squared); None: all.
    """

    def __init__(
        self,
        *,
        samples: Any,
        file: str | None = None,
        id_column: str | None = None,
        from_column: str | None = None,
        order: list[str] | None = None,
        group: list[str] | None = None,
        ties: Ties = "drop",
        max_pairs: int | None = None,
    ) -> None:
        if (file is None) == (from_column is None):
            raise PairsError("objective=preference needs pairs: set objective.pairs.file=<pairs manifest> or "
                             "objective.pairs.from_column=<rating column> (one of them)")  # fmt: skip
        if not hasattr(samples, "split_rows"):
            raise PairsError(f"objective=preference pairs rows of a manifest: datamodule={type(samples).__name__} "
                             "has none; use datamodule=manifest")  # fmt: skip
        super().__init__(samples)
        self.file, self.id_column, self.from_column = file, id_column, from_column
        self.order, self.group, self.ties, self.max_pairs = order, list(group or []), ties, max_pairs
        self.pairs: dict[str, pd.DataFrame] = {}

    @property
    def samples(self) -> ManifestDataModule:
        """The sample datamodule the pairs are drawn from (the wrapped one)."""
        return self.inner

    def raw_texts(self, split: str, modality: str) -> list[str] | None:
        return None  # the pair datasets' items are pairs, not the samples' rows

    # ------------------------------------------------------------------ pairs
    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.pairs:
            return
        frame = pd.DataFrame(read_manifest(self.samples.manifest, encoding=self.samples.encoding))
        frame.index = pd.RangeIndex(1, len(frame) + 1)  # data row numbers, as in splits.csv
        place = {row: (split, i) for split in SPLITS for i, row in enumerate(self.samples.split_rows[split])}
        if self.file is not None:
            pairs = self._from_file(frame, place)
        else:
            pairs = {split: self._from_ratings(frame, split) for split in SPLITS}
        rng = np.random.default_rng(0)
        for split, table in pairs.items():
            if self.max_pairs is not None and len(table) > self.max_pairs:
                table = table.iloc[np.sort(rng.choice(len(table), self.max_pairs, replace=False))]
            self.pairs[split] = table.reset_index(drop=True)
        log.info("preference pairs: %s", {s: len(p) for s, p in self.pairs.items()})

    def _from_ratings(self, frame: pd.DataFrame, split: str) -> pd.DataFrame:
        rows = self.samples.split_rows[split]
        part = frame.loc[rows].assign(_index=range(len(rows)))
        pairs = pairs_from_ratings(part, self.from_column, group=self.group or None, ties=self.ties, order=self.order,
                                   id_column="_index")  # fmt: skip
        return pairs.assign(margin=0.0)

    def _from_file(self, frame: pd.DataFrame, place: dict[int, tuple[str, int]]) -> dict[str, pd.DataFrame]:
        if self.id_column is not None and self.id_column not in frame.columns:
            raise PairsError(f"objective.pairs.id_column={self.id_column!r} is not a manifest column "
                             f"({list(frame.columns)})")  # fmt: skip
        ids = frame[self.id_column].astype(str) if self.id_column else pd.Series(frame.index.astype(str), frame.index)
        pairs = read_pairs(self.file, list(ids))
        row_of = dict(zip(ids, frame.index, strict=True))
        out: dict[str, list[tuple[int, int, float, float]]] = {split: [] for split in SPLITS}
        apart = 0
        for chosen, rejected, target, margin in pairs[["chosen", "rejected", "target", "margin"]].itertuples(False):
            a, b = place.get(row_of[chosen]), place.get(row_of[rejected])
            if a is None or b is None or a[0] != b[0]:
                apart += 1  # a skipped (bad) sample, or two splits
                continue
            out[a[0]].append((a[1], b[1], target, margin))
        if apart:
            log.warning("preference pairs: %d of %d pairs in %s dropped: their samples are in different splits or "
                        "were skipped", apart, len(pairs), self.file)  # fmt: skip
        columns = ["chosen", "rejected", "target", "margin"]
        return {split: pd.DataFrame(rows, columns=columns) for split, rows in out.items()}

    def dataset(self, split: str) -> PairDataset:
        if split not in self.pairs:
            raise RuntimeError(f"call setup() before asking for the {split} pairs")
        return PairDataset(self.samples.dataset(split), self.pairs[split])

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.samples.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.samples.seed) if shuffle else None,
            num_workers=self.samples.num_workers,
            persistent_workers=self.samples.num_workers > 0,
            pin_memory=self.samples.pin_memory,
            collate_fn=PairCollate(self.modalities),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
