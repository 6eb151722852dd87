"""objective=preference end to end on a generated text + table manifest: pairs from ratings or a pairs file,
the reward model, pair metrics with the modality ablation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_train

from mmfw.objectives.pairs import PAIR_TARGET_KEY, PairDataModule
from mmfw.objectives.preference import PairsError, Preference, bradley_terry_loss
from mmfw.train import build

LEVELS = ["negative", "neutral", "positive"]


def write_rated_manifest(root, n: int = 90):
    """Reviews whose rating follows their `stars` number (and a word in the text); products group them."""
    rng = np.random.default_rng(0)
    rating = rng.integers(0, 3, n)
    rows = pd.DataFrame({
        "review_id": [f"r{i}" for i in range(n)],
        "text": [f"{['awful', 'okay', 'great'][r]} product number {i}" for i, r in enumerate(rating)],
        "stars": rating + rng.normal(0, 0.3, n),
        "product": [f"p{i % 6}" for i in range(n)],
        "rating": [LEVELS[r] for r in rating],
        "label": ["yes" if r == 2 else "no" for r in rating],
        "split": ["train"] * (n * 2 // 3) + ["val"] * (n // 6) + ["test"] * (n - n * 2 // 3 - n // 6),
    })  # fmt: skip
    path = root / "reviews.csv"
    rows.to_csv(path, index=False)
    return path, rows


def preference_overrides(manifest, *extra):
    return [
        "datamodule=manifest", f"datamodule.manifest={manifest}", "datamodule.target=label", "datamodule.batch_size=8",
        "+datamodule.columns={text: {kind: text, column: text}, meta: {kind: tabular, numeric: [stars]}}",
        "objective=preference", *extra,
    ]  # fmt: skip


RATINGS = ["objective.pairs.from_column=rating", f"objective.pairs.order=[{','.join(LEVELS)}]",
           "objective.pairs.group=[product]"]  # fmt: skip


def test_pairs_from_ratings_stay_within_a_split_and_a_group(tmp_path):
    manifest, rows = write_rated_manifest(tmp_path)
    cfg = compose_train(preference_overrides(manifest, *RATINGS), tmp_path)
    datamodule, _ = build(cfg)
    assert isinstance(datamodule, PairDataModule)
    for split in ("train", "val", "test"):
        part = rows[rows["split"] == split].reset_index(drop=True)  # dataset order = manifest order in the split
        pairs = datamodule.pairs[split]
        assert len(pairs) > 0
        chosen, rejected = part.loc[pairs["chosen"]], part.loc[pairs["rejected"]]
        assert (chosen["product"].to_numpy() == rejected["product"].to_numpy()).all()
        rank = {v: i for i, v in enumerate(LEVELS)}
        assert (chosen["rating"].map(rank).to_numpy() > rejected["rating"].map(rank).to_numpy()).all()
        expected = sum(  # every strictly ordered pair of a product, ties dropped
            int((a > b).sum())
            for _, g in part.groupby("product")
            for a, b in [(g["rating"].map(rank).to_numpy()[:, None], g["rating"].map(rank).to_numpy()[None, :])]
        )
        assert len(pairs) == expected
    batch = next(iter(datamodule.val_dataloader()))
    n = batch[PAIR_TARGET_KEY].shape[0]
    assert batch["mask"].shape[0] == 2 * n and batch["text"].shape[0] == 2 * n


def test_pairs_file_by_id_column_drops_pairs_across_splits(tmp_path, caplog):
    manifest, rows = write_rated_manifest(tmp_path)
    pairs = pd.DataFrame({"chosen": ["r0", "r1", "r70"], "rejected": ["r2", "r80", "r71"], "margin": [0.5, 0, 0]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    overrides = [f"objective.pairs.file={tmp_path / 'pairs.csv'}", "objective.pairs.id_column=review_id"]
    datamodule, _ = build(compose_train(preference_overrides(manifest, *overrides), tmp_path))
    train = datamodule.pairs["train"]
    assert train[["chosen", "rejected", "margin"]].values.tolist() == [[0, 2, 0.5]]
    val = rows.index[rows["split"] == "val"]
    assert datamodule.pairs["val"][["chosen", "rejected"]].values.tolist() == [[70 - val[0], 71 - val[0]]]
    assert "1 of 3 pairs" in caplog.text
    cfg = compose_train(preference_overrides(manifest), tmp_path)
    with pytest.raises(PairsError, match="objective.pairs.file=.*objective.pairs.from_column"):
        build(cfg)


def test_reward_model_trains_with_the_bradley_terry_loss(tmp_path):
    manifest, _ = write_rated_manifest(tmp_path)
    cfg = compose_train(preference_overrides(manifest, *RATINGS, "trainer.max_epochs=1"), tmp_path)
    datamodule, model = build(cfg)
    assert cfg.monitor.metric == "val/pair_acc" and isinstance(model.objective, Preference)
    batch = next(iter(datamodule.train_dataloader()))
    n = batch[PAIR_TARGET_KEY].shape[0]
    chosen = {k: v[:n] if torch.is_tensor(v) else v for k, v in batch.items() if k not in ("meta",)}
    chosen["meta"] = {k: v[:n] for k, v in batch["meta"].items()}
    rejected = {k: v[n:] if torch.is_tensor(v) else v for k, v in batch.items() if k not in ("meta",)}
    rejected["meta"] = {k: v[n:] for k, v in batch["meta"].items()}
    model.eval()  # the same forward twice: no dropout
    loss, rewards, target = model._loss_and_outputs(batch)
    direct = -torch.nn.functional.logsigmoid(model(chosen).squeeze(-1) - model(rejected).squeeze(-1)).mean()
    assert float(loss) == pytest.approx(float(direct), abs=1e-5)
    assert float(loss) == pytest.approx(float(bradley_terry_loss(rewards[:n], rewards[n:])), abs=1e-6)
    trainer = pl.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    (tested,) = trainer.test(model, datamodule=datamodule, verbose=False)
    for name in ("test/pair_acc", "test/pair_auroc", "test/pair_ece", "test/pair_acc[-meta]", "test/pair_acc[-text]"):
        assert 0.0 <= tested[name] <= 1.0, name
    assert tested["test/pair_acc"] > 0.8  # the ratings follow `stars` and a word of the text: learnable
    single = model(next(iter(datamodule.samples.test_dataloader())))  # a reward per single sample
    assert single.shape == (8, 1)
