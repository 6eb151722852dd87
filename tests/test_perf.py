"""What keeps runs fast: a fast dev run that writes nothing, the GPU presets' switches, compile and channels-last."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_AVDIGITS, compose_train
from test_module import ToyPairs, make_module, quiet_trainer
from torch.utils.data import DataLoader

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
