"""The baseline's features: a run's splits as arrays, and one feature function per modality kind (see
:mod:`mmfw.baseline`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from torch.utils.data import DataLoader

from mmfw.contracts import MASK_KEY, TARGET_KEY

SPLITS = ("train", "val", "test")
ALL = "all"  # the model on all modalities together


@dataclass
class SplitArrays:
    """One split as arrays: per modality its batch-contract tensor(s), the mask ``(N, M)`` and the target."""

    inputs: dict[str, Any]
    mask: np.ndarray
    target: np.ndarray
    texts: dict[str, list[str] | None]


def split_arrays(datamodule: pl.LightningDataModule, split: str, modalities: Sequence[str]) -> SplitArrays:
    """Every sample of ``split`` in dataset order (an unshuffled pass over the split's dataset)."""
    dataset = getattr(datamodule, f"{split}_dataloader")().dataset
    parts: dict[str, list[Any]] = {}
    for batch in DataLoader(dataset, batch_size=512, shuffle=False):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)

    def cat(chunks: list[Any]) -> Any:
        if isinstance(chunks[0], dict):
            return {k: torch.cat([c[k] for c in chunks]).numpy() for k in chunks[0]}
        return torch.cat(chunks).numpy()

    inputs = {m: cat(parts[m]) for m in modalities}
    mask = cat(parts[MASK_KEY]).astype(bool)
    kinds = modality_kinds(datamodule)
    texts = {m: raw_texts(datamodule, split, m, mask[:, i]) for i, m in enumerate(modalities) if kinds[m] == "text"}
    return SplitArrays(inputs=inputs, mask=mask, target=cat(parts[TARGET_KEY]), texts=texts)


def modality_kinds(datamodule: pl.LightningDataModule) -> dict[str, str]:
    """``{modality: kind}``: the baseline chooses features by kind (:mod:`mmfw.data.base`)."""
    return dict(datamodule.modality_kinds)


def raw_texts(datamodule: pl.LightningDataModule, split: str, modality: str, present: np.ndarray) -> list[str] | None:
    """The raw strings of a text modality in dataset order ("" where missing), or None when the datamodule keeps
    only token ids (``datamodule.raw_texts``)."""
    values = datamodule.raw_texts(split, modality)
    if values is None:
        return None
    if len(values) != len(present):
        raise RuntimeError(f"{split} split: {len(values)} raw texts of {modality!r} for {len(present)} samples")
    return [str(v) if p and v is not None else "" for v, p in zip(values, present, strict=True)]


@dataclass(frozen=True)
class FeatureSettings:
    """How each modality kind is turned into features (see the module docstring)."""

    image_side: int = 16
    text_max_features: int = 200_000
    text_min_df: int = 2


def text_features(
    data: dict[str, SplitArrays], modality: str, present: dict[str, np.ndarray], settings: FeatureSettings
) -> tuple[dict[str, sp.csr_matrix], str]:
    """TF-IDF of the raw text, or of token ids and id bigrams where the datamodule keeps no raw text."""
    texts = {s: data[s].texts.get(modality) for s in SPLITS}
    if texts["train"] is not None:
        min_df = settings.text_min_df if len(texts["train"]) >= 200 else 1
        common = dict(sublinear_tf=True, min_df=min_df, max_features=settings.text_max_features, dtype=np.float32)
        vectorizer = FeatureUnion([
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **common)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common)),
        ])  # fmt: skip
        described = "tf-idf word 1-2 + char 2-5 grams of the raw text"
    else:  # token ids only: a bag of ids and id bigrams, padding dropped
        texts = {s: [" ".join(f"t{i}" for i in row if i > 0) for row in data[s].inputs[modality]] for s in SPLITS}
        vectorizer = TfidfVectorizer(analyzer="word", token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True)
        described = "tf-idf of token ids and id bigrams (the datamodule keeps no raw text)"
    train = vectorizer.fit_transform(texts["train"])
    out = {"train": train, **{s: vectorizer.transform(texts[s]) for s in ("val", "test")}}
    return {s: sp.csr_matrix(x, dtype=np.float32) for s, x in out.items()}, described


def tabular_features(
    data: dict[str, SplitArrays], modality: str, present: dict[str, np.ndarray], settings: FeatureSettings
) -> tuple[dict[str, sp.csr_matrix], str]:
    """The datamodule's standardised numeric columns and missing flags, and one-hot categorical columns."""
    dense, categorical = {}, {}
    for s in SPLITS:
        cols = data[s].inputs[modality]
        numeric = cols.get("numeric", np.zeros((len(present[s]), 0)))
        missing = cols.get("numeric_missing", np.zeros_like(numeric, dtype=bool))
        dense[s] = np.concatenate([numeric, missing.astype(np.float32)], axis=1)
        categorical[s] = cols.get("categorical", np.zeros((len(present[s]), 0), dtype=np.int64))
    out = {s: [sp.csr_matrix(dense[s], dtype=np.float32)] for s in SPLITS}
    if categorical["train"].shape[1]:
        encoder = OneHotEncoder(handle_unknown="ignore").fit(categorical["train"])
        for s in SPLITS:
            out[s].append(encoder.transform(categorical[s]))
    features = {s: _zero_missing(sp.hstack(out[s], format="csr", dtype=np.float32), present[s]) for s in SPLITS}
    return features, "standardised numeric + missing flags + one-hot categorical"


def image_features(
    data: dict[str, SplitArrays], modality: str, present: dict[str, np.ndarray], settings: FeatureSettings
) -> tuple[dict[str, sp.csr_matrix], str]:
    """Pixels average-pooled to at most ``settings.image_side`` per side, standardised on train."""
    pooled = {s: _pool_image(data[s].inputs[modality], settings.image_side) for s in SPLITS}
    side = "x".join(str(n) for n in pooled["train"].shape[2:])
    flat = {s: x.reshape(len(x), -1) for s, x in pooled.items()}
    return _standardised(flat, present), f"pixels average-pooled to {side} per channel, standardised"


def audio_features(
    data: dict[str, SplitArrays], modality: str, present: dict[str, np.ndarray], settings: FeatureSettings
) -> tuple[dict[str, sp.csr_matrix], str]:
    """Mean and standard deviation over time of each log-mel band, standardised on train."""
    flat = {}
    for s in SPLITS:
        mel = data[s].inputs[modality].reshape(len(present[s]), -1, data[s].inputs[modality].shape[-1])
        flat[s] = np.concatenate([mel.mean(axis=-1), mel.std(axis=-1)], axis=1)
    return _standardised(flat, present), "mean and std over time of each log-mel band, standardised"


FEATURES_BY_KIND = {
    "text": text_features,
    "tabular": tabular_features,
    "image": image_features,
    "audio": audio_features,
}
"""One feature function per modality kind (:data:`mmfw.contracts.KINDS`): a new kind adds one function here."""


def modality_features(
    kind: str, data: dict[str, SplitArrays], modality: str, column: int, settings: FeatureSettings
) -> tuple[dict[str, sp.csr_matrix], str]:
    """Features of one modality for every split (fitted on train only) and a short description of them."""
    if kind not in FEATURES_BY_KIND:
        raise ValueError(f"the baseline has no features for modality kind {kind!r} (modality {modality!r})")
    present = {s: data[s].mask[:, column] for s in SPLITS}
    return FEATURES_BY_KIND[kind](data, modality, present, settings)


def _standardised(flat: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> dict[str, sp.csr_matrix]:
    """Dense features scaled by train statistics of the present samples; missing samples get zeros."""
    scaler = StandardScaler().fit(flat["train"][present["train"]] if present["train"].any() else flat["train"])
    scaled = {s: scaler.transform(flat[s]).astype(np.float32) for s in SPLITS}
    return {s: _zero_missing(sp.csr_matrix(scaled[s]), present[s]) for s in SPLITS}


def _pool_image(images: np.ndarray, side: int) -> np.ndarray:
    tensor = torch.from_numpy(images).float()
    if images.dtype == np.uint8:
        tensor = tensor / 255.0
    size = (min(side, tensor.shape[-2]), min(side, tensor.shape[-1]))
    return torch.nn.functional.adaptive_avg_pool2d(tensor, size).numpy()


def _zero_missing(features: sp.csr_matrix, present: np.ndarray) -> sp.csr_matrix:
    """A missing modality contributes nothing (the mask-bit features say it is missing)."""
    return sp.csr_matrix(sp.diags(present.astype(np.float32)) @ features)


def unit_block(features: dict[str, sp.csr_matrix]) -> dict[str, sp.csr_matrix]:
    """Scale a modality's features so that their mean squared row norm on train is 1: stacked side by side, a block
    of 768 standardised pixels would otherwise outweigh a TF-IDF block of norm 1 under one shared ``C``."""
    train = features["train"]
    mean_sq = float(train.multiply(train).sum()) / max(train.shape[0], 1)
    scale = 1.0 / math.sqrt(mean_sq) if mean_sq > 0 else 1.0
    return {s: (x * scale).tocsr() for s, x in features.items()}


def feature_sets(
    data: dict[str, SplitArrays], kinds: dict[str, str], modalities: list[str], settings: FeatureSettings
) -> tuple[dict[str, dict[str, sp.csr_matrix]], dict[str, str]]:
    """``{model name: {split: features}}``: one model per modality (when there are several) and ``all``, which
    stacks every modality's block and the mask bits; and each modality's feature description."""
    features, described = {}, {}
    for j, m in enumerate(modalities):
        features[m], described[m] = modality_features(kinds[m], data, m, j, settings)
        features[m] = unit_block(features[m])
    several = len(modalities) > 1
    sets = {m: features[m] for m in modalities} if several else {}
    masks = {s: sp.csr_matrix(data[s].mask.astype(np.float32)) for s in SPLITS}
    sets[ALL] = {
        s: sp.hstack([features[m][s] for m in modalities] + ([masks[s]] if several else []), format="csr")
        for s in SPLITS
    }
    return sets, described
