from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mmfw.contracts import TaskSpec
from mmfw.data.loaders import ModalityCollate
from mmfw.encoders import LeNetEncoder
from mmfw.fusion import ConcatFusion, LateFusion
from mmfw.module import MultimodalModule, NonFiniteLossError

TASK = TaskSpec("multiclass", 3, ["a", "b", "c"])


class ToyPairs(Dataset):
    """Class k: image brightness k, audio brightness k; learnable from either modality."""

    def __init__(self, n: int = 48) -> None:
        g = torch.Generator().manual_seed(0)
        self.target = torch.arange(n) % 3
        self.image = self.target.float()[:, None, None, None] + 0.1 * torch.randn(n, 1, 8, 8, generator=g)
        self.audio = self.target.float()[:, None, None, None] + 0.1 * torch.randn(n, 1, 6, 10, generator=g)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.image[i],
            "audio": self.audio[i],
            "mask": torch.ones(2, dtype=torch.bool),
            "target": self.target[i],
        }


def make_module(fusion=None, optimizer=partial(torch.optim.Adam, lr=1e-2), **kwargs) -> MultimodalModule:
    encoders = {"image": LeNetEncoder(1, channels=(4,), out_dim=8), "audio": LeNetEncoder(1, channels=(4,), out_dim=8)}
    return MultimodalModule(
        encoders=encoders,
        fusion=fusion or partial(ConcatFusion, out_dim=16, dropout=0.0),
        head=partial(torch.nn.Linear),
        task=TASK,
        optimizer=optimizer,
        **kwargs,
    )


def test_forward_shape_and_head():
    module = make_module()
    batch = next(iter(DataLoader(ToyPairs(), batch_size=5)))
    assert module(batch).shape == (5, 3)
    assert isinstance(module.head, torch.nn.Linear) and module.head.in_features == 16


def test_late_fusion_is_its_own_head():
    module = make_module(fusion=partial(LateFusion, num_outputs=3))
    assert isinstance(module.head, torch.nn.Identity)
    with pytest.raises(ValueError, match="num_outputs"):
        make_module(fusion=partial(LateFusion, num_outputs=4))


def test_every_parameter_is_optimised():
    module = make_module()
    optimizer = module.configure_optimizers()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in module.parameters()}


def test_modality_dropout_keeps_one_present_modality():
    module = make_module(modality_dropout=0.9)
    mask = torch.ones(2000, 2, dtype=torch.bool)
    mask[:500, 1] = False  # audio already missing for some samples
    dropped = module._dropout_mask(mask)
    assert dropped.any(dim=1).all()
    assert not (dropped & ~mask).any(), "dropout must never turn a missing modality on"
    assert 0.3 < (~dropped[500:]).float().mean() < 0.6


def test_fit_logs_metrics_best_and_modality_contribution(tmp_path):
    module = make_module()
    data = DataLoader(ToyPairs(), batch_size=8)
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    metrics = trainer.callback_metrics
    assert {"train/acc", "val/acc", "val/f1_macro", "val/acc_best"} <= set(metrics)
    assert metrics["val/acc_best"] >= metrics["val/acc"] - 1e-6
    trainer.test(module, dataloaders=data, verbose=False)
    assert {"test/acc", "test/acc[-image]", "test/acc[-audio]", "test/f1_macro[-audio]"} <= set(
        trainer.callback_metrics
    )


def test_epoch_losses_and_the_best_of_a_loss_monitor(tmp_path):
    """Epoch losses are means over all samples; monitoring val/loss (min) logs its running minimum."""
    module = make_module(monitor="val/loss", monitor_mode="min")
    data = DataLoader(ToyPairs(n=44), batch_size=8)  # a last batch of 4: the mean is weighted by batch size
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        log_every_n_steps=2,  # train/loss_step is logged at the log points
    )
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/loss_step", "val/loss", "val/loss_best"} <= set(metrics)
    assert float(metrics["val/loss_best"]) <= float(metrics["val/loss"]) + 1e-6
    trainer.test(module, dataloaders=data, verbose=False)
    with torch.no_grad():
        everything = next(iter(DataLoader(ToyPairs(n=44), batch_size=44)))
        expected = torch.nn.functional.cross_entropy(module.eval()(everything), everything["target"])
    assert float(trainer.callback_metrics["test/loss"]) == pytest.approx(float(expected), rel=1e-5)


class NaNAt(ToyPairs):
    """ToyPairs whose images are NaN in the samples of one batch (unshuffled, batch size 4)."""

    def __init__(self, n: int, bad_batch: int) -> None:
        super().__init__(n)
        self.image[4 * bad_batch : 4 * bad_batch + 4] = float("nan")


def quiet_trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        accelerator="cpu",
        **kwargs,
    )


def test_non_finite_loss_is_raised_at_the_next_check_naming_its_step(tmp_path):
    """The loss is checked on the device every step; the error comes at the next log point (here the epoch's end,
    before validation and before any checkpoint) and names the step whose loss was first non-finite."""
    module = make_module()
    trainer = quiet_trainer(tmp_path, max_epochs=1, log_every_n_steps=50)
    data = DataLoader(NaNAt(n=40, bad_batch=3), batch_size=4)
    with pytest.raises(NonFiniteLossError, match=r"nan at global step 3 \(epoch 0, batch 3\)"):
        trainer.fit(module, train_dataloaders=data, val_dataloaders=DataLoader(ToyPairs(8), batch_size=4))


def test_a_checkpoint_is_never_written_after_a_non_finite_loss():
    module = make_module()
    module.training_step(next(iter(DataLoader(NaNAt(n=4, bad_batch=0), batch_size=4))), 0)
    with pytest.raises(NonFiniteLossError, match="global step 0"):
        module.on_save_checkpoint({})


SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__")


def count_syncs(monkeypatch, run) -> int:
    """Calls that copy a tensor's value to the host (on a GPU each waits for the device) while ``run()`` runs."""
    calls = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            calls.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        run()
    finally:
        monkeypatch.undo()
    return len(calls)


def test_training_steps_do_not_copy_values_to_the_host(tmp_path, monkeypatch):
    """Three times the training steps between two log points, the same host copies: no per-step sync."""

    def fit(batches: int) -> None:
        trainer = quiet_trainer(tmp_path, max_epochs=1, log_every_n_steps=50)
        data = DataLoader(ToyPairs(n=4 * batches), batch_size=4)
        # SGD: Adam reads its step count with .item() every step, from a host tensor (no sync on a GPU either).
        module = make_module(optimizer=partial(torch.optim.SGD, lr=1e-2))
        trainer.fit(module, train_dataloaders=data, val_dataloaders=DataLoader(ToyPairs(8), batch_size=4))

    short, long = count_syncs(monkeypatch, lambda: fit(4)), count_syncs(monkeypatch, lambda: fit(12))
    assert short == long


def test_training_metrics_skip_per_update_argument_checks():
    """validate_args costs host syncs every update; the loss already rejects bad targets during training."""
    module = make_module()
    assert not any(metric.validate_args for metric in module.train_metrics.values())
    assert all(metric.validate_args for metric in module.val_metrics.values())


def test_monitor_must_be_a_computed_metric():
    with pytest.raises(ValueError, match=r"monitor.metric='val/mse'.*val/acc"):
        make_module(monitor="val/mse")


def test_late_fusion_gets_num_outputs_from_the_task():
    module = make_module(fusion=partial(LateFusion))  # no num_outputs in the config: the module passes the task's
    assert module.fusion.out_dim == TASK.num_outputs and isinstance(module.head, torch.nn.Identity)


def test_mask_columns_in_another_order_are_refused():
    module = make_module()
    batch = next(iter(DataLoader(ToyPairs(), batch_size=5, collate_fn=ModalityCollate(["audio", "image"]))))
    with pytest.raises(ValueError, match=r"\['audio', 'image'\].*\['image', 'audio'\]"):
        module(batch)
    batch["modalities"] = ("image", "audio")
    assert module(batch).shape == (5, 3)
