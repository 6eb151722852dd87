"""What keeps runs fast: a fast dev run that writes nothing, the GPU presets' switches, compile and channels-last."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_AVDIGITS, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_module import ToyPairs, make_module, quiet_trainer
from torch.utils.data import DataLoader, Subset, TensorDataset

from mmfw.runs.run_folder import read_run_json
from mmfw.train import train

REPO = Path(__file__).resolve().parent.parent


def test_fast_dev_run_writes_no_checkpoint_wandb_run_or_csv(tmp_path, avdigits_raw):
    """debug=fdr is one batch of each split to see that everything connects: the run folder keeps its record
    (run.json, the config) and nothing else, in particular no last.ckpt a later resume= would pick up."""
    cfg = compose_train([*TINY_AVDIGITS, "debug=fdr", "float32_matmul_precision=high"], tmp_path)
    try:
        train(cfg)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert read_run_json(tmp_path)["status"] == "completed"
    written = {path.relative_to(tmp_path).parts[0] for path in tmp_path.rglob("*")}
    assert not written & {"checkpoints", "wandb", "csv"}, sorted(written)


def test_compiled_module_trains_and_keeps_its_weight_names(tmp_path):
    """model.compile=true: the forward pass goes through torch.compile (the aot_eager backend here, to keep the test
    fast; the default backend is inductor), training works, and checkpoints name the weights as without compile."""
    plain = make_module()
    compiled = make_module(compile=True, compile_options={"backend": "aot_eager"})
    assert compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    data = DataLoader(ToyPairs(n=16), batch_size=8)
    trainer.fit(compiled, train_dataloaders=data, val_dataloaders=data)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    plain = make_module().eval()
    channels_last = make_module(channels_last=True).eval()
    channels_last.load_state_dict(plain.state_dict())
    conv = channels_last.encoders["image"].features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    batch = next(iter(DataLoader(ToyPairs(n=8), batch_size=8)))
    torch.testing.assert_close(channels_last(batch), plain(batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["gpu", "ddp", "gpu_bf16"])
def test_gpu_presets_pin_memory_and_switch_on_benchmark_and_tf32(preset, tmp_path):
    cfg = compose_train([f"trainer={preset}"], tmp_path)
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer" and cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.benchmark is True and cfg.float32_matmul_precision == "high"
    assert cfg.datamodule.pin_memory is True
    assert cfg.trainer.precision == ("bf16-mixed" if preset == "gpu_bf16" else "32-true")
    off = ["datamodule.pin_memory=false", "trainer.benchmark=false"]
    overridden = compose_train([f"trainer={preset}", *off], tmp_path)
    assert overridden.datamodule.pin_memory is False and overridden.trainer.benchmark is False


def test_cpu_presets_pin_nothing(tmp_path):
    for preset in ("cpu", "ddp_cpu"):
        cfg = compose_train([f"trainer={preset}"], tmp_path)
        assert cfg.datamodule.pin_memory is False and cfg.float32_matmul_precision == "highest"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_check_without_a_gpu_says_so_and_measures_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    result = subprocess.run([str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "torch sees no GPU" in result.stderr and "nothing measured" in result.stderr
    assert not list(tmp_path.iterdir())  # no run started


class LoggingTiny(pl.LightningModule):
    """A linear model that logs its step loss to the progress bar, as mmfw's module does."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1]), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_progress_bar_reads_metrics_at_its_refresh_rate_and_shows_each_epochs_end(tmp_path, monkeypatch):
    """The shipped bar (conf/callbacks/default.yaml) reads the logged metrics about ``refresh_rate`` times a second,
    not after every batch (Lightning's does: ~2.5 ms a step at batch 8, bench/step_overhead.py), and still ends each
    epoch with its full count and last values, and draws the validation bar."""
    rows = TensorDataset(torch.randn(400, 4), torch.randint(0, 2, (400,)))
    train_batches, val_batches, epochs, rate = 200, 20, 2, 4
    bar = instantiate(OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml").rich_progress_bar)
    reads, seen = [], {}
    get_metrics = bar.get_metrics

    def counted(trainer, pl_module):
        reads.append(trainer.current_epoch)
        return get_metrics(trainer, pl_module)

    monkeypatch.setattr(bar, "get_metrics", counted)

    class Watch(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            # after the bar's own epoch end (callbacks run in order): what a reader sees when the epoch is over
            task = bar.progress.tasks[bar.train_progress_bar_id]
            shown = dict(bar._metric_component._metrics)
            seen[trainer.current_epoch] = (task.completed, task.total, shown, dict(trainer.progress_bar_metrics))

    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[bar, Watch()], logger=False, enable_checkpointing=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    assert bar.refresh_rate == rate and trainer.progress_bar_callback is bar
    start = time.monotonic()
    trainer.fit(LoggingTiny(), DataLoader(rows, batch_size=2), DataLoader(Subset(rows, range(40)), batch_size=2))
    elapsed = time.monotonic() - start
    # per epoch: the first and last batch, the epoch end, the validation end; the rest at most `rate` a second
    assert len(reads) <= epochs * 4 + rate * elapsed, (len(reads), elapsed)
    for epoch in range(epochs):
        completed, total, shown, logged = seen[epoch]
        assert completed == total == train_batches
        assert shown.keys() >= {"train/loss", "val/loss"} and shown["train/loss"] == float(logged["train/loss"])
    val_task = bar.progress.tasks[bar.val_progress_bar_id]
    assert val_task.completed == val_task.total == val_batches
