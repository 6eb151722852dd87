"""A trained reward model used like any run (issue 13, point 3): ``mmfw.load_run`` / ``mmfw-predict`` score single
samples with the reward, and ``mmfw-export`` exports the reward model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_train
from omegaconf import OmegaConf
from torch.utils.data import default_collate

import mmfw
from mmfw.objectives.preference import Preference
from mmfw.runs.export import export_run
from mmfw.runs.load import predict_run
from mmfw.train import build, train

from .test_preference_runs import RATINGS, preference_overrides, write_rated_manifest


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory):
    """A tiny reward model trained on pairs from the ratings of a text + table manifest, and its test rows as a new
    file (no split column)."""
    root = tmp_path_factory.mktemp("preference")
    manifest, rows = write_rated_manifest(root)
    run_dir = root / "run"
    extra = ["trainer.max_epochs=4", "logger=csv", "callbacks.rich_progress_bar=null", "seed=0"]
    cfg = compose_train(preference_overrides(manifest, *RATINGS, *extra), run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    train(cfg)
    test_rows = rows[rows["split"] == "test"].drop(columns=["split"]).reset_index(drop=True)
    test_rows.to_csv(root / "test_rows.csv", index=False)
    return run_dir, root / "test_rows.csv", test_rows, cfg


def test_predict_scores_each_sample_with_the_reward(reward_run, tmp_path):
    run_dir, file, test_rows, _ = reward_run
    run = mmfw.load_run(run_dir)
    assert isinstance(run.model.objective, Preference)
    path = predict_run(run_dir, file, out=tmp_path, id_column="review_id", accelerator="cpu")
    table = pd.read_csv(path)
    # One reward per sample; no class columns (the reward model predicts no class).
    assert list(table.columns) == ["row", "review_id", "masked", "reward"]
    assert list(table["review_id"]) == list(test_rows["review_id"])
    # The rewards are the model's forward on the run's own test samples (decoded by the training datamodule).
    samples = run.datamodule.dataset("test")
    with torch.no_grad():
        expected = run.model(default_collate([samples[i] for i in range(len(samples))])).squeeze(-1).numpy()
    assert np.allclose(table["reward"].to_numpy(float), expected, atol=1e-5)
    assert np.allclose(run.predict(file).table["reward"].to_numpy(float), expected, atol=1e-5)


def test_rewards_of_a_chosen_and_its_rejected_sample_give_the_models_preference(reward_run, tmp_path):
    """Scoring the test pairs' samples one by one reproduces the training run's ``test/pair_acc``: each pair is
    ordered as the reward model orders it in its pair batches."""
    run_dir, file, _, cfg = reward_run
    reward = pd.read_csv(predict_run(run_dir, file, out=tmp_path, accelerator="cpu"))["reward"].to_numpy(float)
    pairs_dm, _ = build(cfg.copy(), stage="test")
    pairs = pairs_dm.pairs["test"]  # indices into the test split = rows of the test file, in order
    strict = pairs[pairs["target"] == 1]
    assert len(strict) > 5
    d = reward[strict["chosen"].to_numpy()] - reward[strict["rejected"].to_numpy()]
    recorded = json.loads((run_dir / "test_metrics.json").read_text())
    recorded = recorded.get("metrics", recorded)
    assert float(np.mean(d > 0) + 0.5 * np.mean(d == 0)) == pytest.approx(recorded["test/pair_acc"], abs=1e-6)
    # The pair batch's reward differences, computed by the module on (chosen, rejected) pairs, are the same numbers.
    run = mmfw.load_run(run_dir)
    batch = next(iter(pairs_dm.test_dataloader()))
    with torch.no_grad():
        _, rewards, target = run.model._loss_and_outputs(batch)
    n = target.shape[0]  # the first batch's pairs, in the order of the pairs table (the test loader keeps it)
    head = pairs.iloc[:n]
    np.testing.assert_allclose(
        (rewards[:n] - rewards[n:]).numpy(), reward[head["chosen"]] - reward[head["rejected"]], atol=1e-5
    )


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_of_a_reward_model_outputs_the_reward(reward_run, tmp_path, fmt):
    run_dir, file, _, _ = reward_run
    path = export_run(run_dir, format=fmt, out=tmp_path)
    record = json.loads((tmp_path / "export.json").read_text())
    assert path.is_file() and record["check"]["max_abs_difference"] <= 1e-4
    assert record["output"] == {"name": "reward", "shape": ["batch", 1]}
    assert record["objective"] == "Preference"
