"""Character drop on raw text: each character is deleted independently with probability ``p``; the datamodule then
tokenizes the corrupted text again with the run's own tokenizer (``corrupted_dataloader``).

A text that loses every character counts as missing (mask bit False), as an empty cell does in a manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mmfw.robustness._common import check_levels, sample_rng


class CharacterDrop:
    """Drop a share ``p`` of the characters (spaces included) of a text modality.

    Character ``i`` of a text is dropped when ``u_i < p`` with ``u_i ~ U(0, 1)`` drawn once per text (seeded by
    ``seed``, the modality name and the sample's position), so a higher ``p`` drops a superset of the characters.

    Args:
        levels: shares of characters dropped, increasing, in (0, 1].
    """

    kind = "text"
    name = "character_drop"
    clean_level = 0.0
    level_label = "share of characters dropped"

    def __init__(self, *, levels: Sequence[float]) -> None:
        self.levels = check_levels(levels, "CharacterDrop.levels", above=0.0, at_most=1.0)

    def batches(self, datamodule: Any, split: str, modality: str, level: float, seed: int) -> Iterable[dict]:
        """The split's batches with ``modality`` re-tokenized from text with a share ``level`` of characters dropped."""
        return datamodule.corrupted_dataloader(split, modality, self.transform(level, seed, modality))

    @staticmethod
    def transform(share: float, seed: int, modality: str):  # noqa: ANN205 (a closure)
        """``corrupt(text, *, index) -> text`` for the datamodule."""

        def corrupt(text: str, *, index: int) -> str:
            keep = sample_rng(seed, modality, index).random(len(text)) >= share
            return "".join(c for c, k in zip(text, keep, strict=True) if k)

        return corrupt
