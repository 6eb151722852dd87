"""Cross-modal retrieval and zero-shot metrics over a whole split's embeddings (:mod:`mmfw.objectives.contrastive`).

For each query ``i`` of modality ``a``, the rank of its own match among all ``b`` samples (1 = retrieved first; ties
count against the query, so a collapsed embedding scores chance, not perfect): recall@k both ways and the median rank.
The embeddings are metric states reduced by concatenation, so under DDP they span every rank's samples.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric


def retrieval_ranks(queries: Tensor, keys: Tensor, relevant: Tensor | None = None) -> Tensor:
    """Rank ``(N,)`` (1 = first) of query ``i``'s best relevant key among all keys, by dot product; an irrelevant key
    that ties with it ranks before it. ``relevant`` bool ``(N, N)``; None: only key ``i`` (the sample's own match)."""
    sim = queries @ keys.T  # (N, N)
    if relevant is None:
        relevant = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    best = sim.masked_fill(~relevant, -math.inf).amax(dim=1, keepdim=True)  # (N, 1)
    return 1 + ((sim >= best) & ~relevant).sum(dim=1)


class RetrievalMetrics(Metric):
    """Cross-modal retrieval over a whole split: recall@k both ways and the median rank (see the module docstring).

    ``update({m: (B, D)}, present (B, M) | None)`` keeps the embeddings; they are gathered across ranks
    (``dist_reduce_fx='cat'``) at ``compute``, which returns for each ordered pair ``(a, b)`` of modalities
    ``recall@k_a_to_b`` (share of queries whose match ranks ``<= k``) and ``median_rank_a_to_b``, plus
    ``recall@k``: the mean over both directions and all pairs (NaN when no sample has two modalities). Only samples
    with both modalities of a pair are its queries and keys.

    Args:
        modalities: the modalities, in the mask's column order.
        ks: the ``k`` of recall@k.
        prefix: prepended to every name (``val/``).
        match: ``instance``: a query's match is its own sample's other modality (captioned images); ``label``: any
            sample with the same label (``update(..., labels=)``) — for data paired by class, such as AV-digits,
            where which same-digit recording goes with an image is chance.
    """

    full_state_update = False

    def __init__(
        self,
        modalities: list[str],
        *,
        ks: tuple[int, ...] = (1, 5, 10),
        prefix: str = "",
        match: Literal["instance", "label"] = "instance",
    ) -> None:
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"retrieval needs at least two modalities, got {modalities}")
        if match not in ("instance", "label"):
            raise ValueError(f"retrieval match must be 'instance' or 'label', got {match!r}")
        self.modalities, self.ks, self.prefix, self.match = list(modalities), tuple(ks), prefix, match
        for m in self.modalities:
            self.add_state(f"emb_{m}", default=[], dist_reduce_fx="cat")
        self.add_state("present", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(
        self, embeddings: dict[str, Tensor], present: Tensor | None = None, labels: Tensor | None = None
    ) -> None:
        """embeddings ``{m: (B, D)}``; present bool ``(B, M)`` (None: all); labels ``(B,)`` (needed for ``label``)."""
        batch = embeddings[self.modalities[0]].shape[0]
        if self.match == "label":
            if labels is None:
                raise ValueError(
                    "RetrievalMetrics(match='label') needs the labels: update(embeddings, present, labels)"
                )
            self.labels.append(labels.detach().reshape(batch))
        for m in self.modalities:
            getattr(self, f"emb_{m}").append(embeddings[m].detach().float())
        if present is None:
            present = torch.ones(batch, len(self.modalities), dtype=torch.bool, device=self.device)
        self.present.append(present.to(torch.uint8))

    def compute(self) -> dict[str, Tensor]:
        def cat(state: list[Tensor] | Tensor) -> Tensor:
            return torch.cat(state) if isinstance(state, list) else state

        present = cat(self.present).bool()
        labels = cat(self.labels) if self.match == "label" else None
        values: dict[str, Tensor] = {}
        recalls: dict[int, list[Tensor]] = {k: [] for k in self.ks}
        for (i, a), (j, b) in combinations(enumerate(self.modalities), 2):
            both = present[:, i] & present[:, j]
            if not both.any():
                continue
            za, zb = cat(getattr(self, f"emb_{a}"))[both], cat(getattr(self, f"emb_{b}"))[both]
            relevant = None if labels is None else labels[both][:, None] == labels[both][None, :]
            for q, (zq, zk) in ((f"{a}_to_{b}", (za, zb)), (f"{b}_to_{a}", (zb, za))):
                ranks = retrieval_ranks(zq, zk, relevant).float()
                for k in self.ks:
                    values[f"{self.prefix}recall@{k}_{q}"] = (ranks <= k).float().mean()
                    recalls[k].append(values[f"{self.prefix}recall@{k}_{q}"])
                values[f"{self.prefix}median_rank_{q}"] = ranks.quantile(0.5)  # the mean of the middle two if even
        for k in self.ks:
            values[f"{self.prefix}recall@{k}"] = (
                torch.stack(recalls[k]).mean() if recalls[k] else torch.tensor(math.nan)
            )
        return values


class Embedded(NamedTuple):
    """A contrastive step's outputs: unit embeddings ``{m: (B, D)}`` and which modalities each sample has."""

    embeddings: dict[str, Tensor]
    present: Tensor


class SplitRetrieval(RetrievalMetrics):
    """:class:`RetrievalMetrics` updated as the module updates every split's metrics: ``update(outputs, target)``."""

    def update(self, outputs: Embedded, target: Tensor) -> None:  # type: ignore[override]
        super().update(outputs.embeddings, outputs.present, target if self.match == "label" else None)


class ZeroShotAccuracy(Metric):
    """Zero-shot classification: each sample's modality-``a`` embedding gets the class whose prototype of modality
    ``b`` (the unit mean of ``b``'s training embeddings of that class, :meth:`Contrastive.on_test_epoch_start`) is the
    most similar. ``zeroshot_acc_<a>_to_<b>`` per ordered pair, ``zeroshot_acc`` their mean."""

    full_state_update = False

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.pairs = [(a, b) for a in self.modalities for b in self.modalities if a != b]
        self.prototypes: dict[str, Tensor] | None = None
        for a, b in self.pairs:
            self.add_state(f"correct_{a}_to_{b}", default=torch.tensor(0.0), dist_reduce_fx="sum")
            self.add_state(f"total_{a}_to_{b}", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, outputs: Embedded, target: Tensor) -> None:
        if self.prototypes is None:
            raise RuntimeError("ZeroShotAccuracy needs class prototypes before the test batches (set .prototypes)")
        for a, b in self.pairs:
            present = outputs.present[:, self.modalities.index(a)]
            scores = outputs.embeddings[a][present].float() @ self.prototypes[b].T
            hits = (scores.argmax(dim=1) == target[present].long()).sum()
            setattr(self, f"correct_{a}_to_{b}", getattr(self, f"correct_{a}_to_{b}") + hits)
            setattr(self, f"total_{a}_to_{b}", getattr(self, f"total_{a}_to_{b}") + present.sum())

    def compute(self) -> dict[str, Tensor]:
        values = {
            f"zeroshot_acc_{a}_to_{b}": getattr(self, f"correct_{a}_to_{b}") / getattr(self, f"total_{a}_to_{b}")
            for a, b in self.pairs
        }
        return {**values, "zeroshot_acc": torch.stack(list(values.values())).mean()}
