"""objective=contrastive end to end on tiny AV-digits: retrieval and zero-shot metrics, monitor, init_from, DDP."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from cli_helpers import mmfw, only_child, output, run_json
from conftest import TINY_AVDIGITS, compose_train

from mmfw.objectives.classify import Classify
from mmfw.objectives.contrastive import Contrastive
from mmfw.objectives.transfer import InitFromError
from mmfw.train import build


def fit(cfg, datamodule, model, tmp_path, steps: int = 5) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps, limit_val_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path, log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return trainer


def test_classify_is_the_default_objective(tmp_path, avdigits_raw):
    """Every existing config and checkpoint is unaffected: objective=classify adds no parameter and no key."""
    cfg = compose_train(TINY_AVDIGITS, tmp_path)
    assert cfg.objective._target_.endswith("Classify")
    _, model = build(cfg)
    assert isinstance(model.objective, Classify)
    assert not any(k.startswith("objective.") for k in model.state_dict())
    assert {"head.weight", "head.bias"} <= set(model.state_dict())


def test_contrastive_trains_and_reports_retrieval_and_zero_shot(tmp_path, avdigits_raw):
    cfg = compose_train(["objective=contrastive", *TINY_AVDIGITS], tmp_path)
    datamodule, model = build(cfg)
    assert cfg.monitor.metric == "val/recall@1" and cfg.monitor.mode == "max"
    assert isinstance(model.objective, Contrastive) and model.fusion is None and model.head is None
    loss, _, _ = model._loss_and_outputs(next(iter(datamodule.train_dataloader())))
    loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters the loss never reaches: {no_grad}"
    trainer = fit(cfg, datamodule, model, tmp_path)
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    val = trainer.callback_metrics
    for name in ("val/recall@1", "val/recall@10_audio_to_image", "val/median_rank_image_to_audio", "val/loss"):
        assert name in val and torch.isfinite(val[name]), name
    (tested,) = trainer.test(model, datamodule=datamodule, verbose=False)
    for pair in ("audio_to_image", "image_to_audio"):
        assert 0.0 <= tested[f"test/zeroshot_acc_{pair}"] <= 1.0
        assert 1.0 <= tested[f"test/median_rank_{pair}"] <= 20
    assert tested["test/zeroshot_acc"] == pytest.approx(
        (tested["test/zeroshot_acc_audio_to_image"] + tested["test/zeroshot_acc_image_to_audio"]) / 2
    )
    assert not any("[-" in name for name in tested), "no modality ablation for retrieval"
    embeddings = model.eval()(next(iter(datamodule.test_dataloader())))
    assert set(embeddings) == {"image", "audio"}
    assert torch.allclose(embeddings["audio"].norm(dim=-1), torch.ones(8), atol=1e-5)


def test_zero_shot_uses_the_other_modalitys_class_prototypes(tmp_path, avdigits_raw):
    """Prototypes are the unit mean training embedding per class; a query gets the nearest other-modality one."""
    cfg = compose_train(["objective=contrastive", *TINY_AVDIGITS], tmp_path)
    datamodule, model = build(cfg)
    trainer = fit(cfg, datamodule, model, tmp_path, steps=2)
    trainer.test(model, datamodule=datamodule, verbose=False)
    (zero_shot,) = [m for m in model.test_metrics.values() if type(m).__name__ == "ZeroShotAccuracy"]
    model.eval()
    with torch.no_grad():
        train = [model(b) for b in datamodule.train_dataloader()], [b["target"] for b in datamodule.train_dataloader()]
        image = torch.cat([e["image"] for e in train[0]])
        labels = torch.cat(train[1])
        expected = torch.nn.functional.normalize(torch.stack([image[labels == c].mean(0) for c in range(10)]), dim=-1)
        assert torch.allclose(zero_shot.prototypes["image"], expected, atol=1e-5)
        test = list(datamodule.test_dataloader())
        audio = torch.cat([model(b)["audio"] for b in test])
        target = torch.cat([b["target"] for b in test])
    accuracy = float(((audio @ expected.T).argmax(1) == target).float().mean())
    assert trainer.callback_metrics["test/zeroshot_acc_audio_to_image"] == pytest.approx(accuracy)


def test_contrastive_needs_two_modalities(tmp_path, avdigits_raw):
    cfg = compose_train(["objective=contrastive", "modalities=[audio]", *TINY_AVDIGITS], tmp_path)
    with pytest.raises(ValueError, match="two or more modalities.*`modalities`"):
        build(cfg)


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory, avdigits_raw):
    """A completed contrastive run folder (best checkpoint, resolved config)."""
    root = tmp_path_factory.mktemp("aligned")
    result = mmfw(
        "mmfw-train", "objective=contrastive", "trainer.max_epochs=1", "logger=csv", *TINY_AVDIGITS, root=root
    )
    assert result.returncode == 0, output(result)
    return only_child(root / "logs" / "train" / "runs")


def test_eval_reproduces_a_contrastive_runs_test_metrics(aligned_run):
    """mmfw-eval rebuilds the run (test split only) and finds the training split for the prototypes itself."""
    from mmfw.evaluate import evaluate

    logged = json.loads((aligned_run / "test_metrics.json").read_text())
    again = evaluate(str(aligned_run), accelerator="cpu")
    for name in ("test/recall@1", "test/median_rank_audio_to_image", "test/zeroshot_acc"):
        assert again[name] == pytest.approx(logged[name], abs=1e-5), name


def test_predict_and_export_of_a_contrastive_run_say_what_to_use_instead(aligned_run, tmp_path):
    """An aligned run has encoders only: predicting or exporting it is refused with what to do, not a traceback."""
    result = mmfw("mmfw-predict", f"run={aligned_run}", f"data={tmp_path / 'rows.csv'}", root=tmp_path)
    assert result.returncode != 0 and "objective=contrastive" in output(result)
    assert "init_from" in output(result), output(result)
    result = mmfw("mmfw-export", f"run={aligned_run}", "format=onnx", root=tmp_path)
    assert result.returncode != 0 and "mmfw-export" in output(result) and "objective=contrastive" in output(result)
    assert not (aligned_run / "export").exists()


def test_init_from_loads_only_that_encoders_weights(aligned_run, tmp_path):
    record = run_json(aligned_run)
    state = torch.load(aligned_run / record["best_checkpoint"], weights_only=True)["state_dict"]
    cfg = compose_train([f"encoder.audio.init_from={aligned_run}", *TINY_AVDIGITS], tmp_path)
    torch.manual_seed(0)
    _, model = build(cfg)
    for name, tensor in model.encoders["audio"].state_dict().items():
        assert torch.equal(tensor, state[f"encoders.audio.{name}"]), name
    fresh = compose_train(TINY_AVDIGITS, tmp_path)
    torch.manual_seed(0)
    _, scratch = build(fresh)  # same seed: the image encoder starts as it would without init_from
    scratch_audio = scratch.encoders["audio"].state_dict()
    assert any(not torch.equal(scratch_audio[name], t) for name, t in model.encoders["audio"].state_dict().items())
    for name, tensor in scratch.encoders["image"].state_dict().items():  # the other encoder: as configured
        assert torch.equal(tensor, model.encoders["image"].state_dict()[name]), name


def test_init_from_a_different_encoder_names_the_key(aligned_run, tmp_path):
    cfg = compose_train(
        [f"encoder.audio.init_from={aligned_run}", "encoder.audio.hidden_dim=32", *TINY_AVDIGITS], tmp_path
    )
    with pytest.raises(InitFromError, match=r"encoder\.audio\.hidden_dim is 32 here but 64 in that run"):
        build(cfg)
    cfg = compose_train([f"encoder.audio.init_from={tmp_path / 'nothing'}", *TINY_AVDIGITS], tmp_path)
    with pytest.raises(InitFromError, match=r"encoder\.audio\.init_from=.*does not exist"):
        build(cfg)


def test_linear_probe_trains_only_the_head(aligned_run, tmp_path):
    overrides = [f"encoder.{m}.{k}" for m in ("image", "audio") for k in (f"init_from={aligned_run}", "frozen=true")]
    cfg = compose_train([*overrides, *TINY_AVDIGITS], tmp_path)
    datamodule, model = build(cfg)
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"fusion", "head"}
    fit(cfg, datamodule, model, tmp_path, steps=2)


@pytest.mark.slow
def test_contrastive_under_ddp_cpu_completes(tmp_path, avdigits_raw):
    result = mmfw("mmfw-train", "objective=contrastive", "trainer=ddp_cpu", "trainer.max_epochs=1", *TINY_AVDIGITS,
                  root=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, output(result)
    run = only_child(tmp_path / "logs" / "train" / "runs")
    record = run_json(run)
    assert record["status"] == "completed" and record["monitor"]["metric"] == "val/recall@1"
    tested = json.loads((run / "test_metrics.json").read_text())
    assert {"test/recall@1", "test/median_rank_audio_to_image", "test/zeroshot_acc"} <= set(tested)
    assert all(value == value for value in tested.values())
