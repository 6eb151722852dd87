"""Resuming with changed values: each resumed part is its own W&B run; a new lr and horizon really take effect."""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_helpers import mmfw, output, run_json
from conftest import TINY_AVDIGITS
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from mmfw.runs import callbacks, resume, run_folder

# ---------------------------------------------------------------- W&B's offline transaction log

# wandb 0.31 reads and writes run-<id>.wandb in Go (wandb-core) only; the format is leveldb's log format
# (https://github.com/google/leveldb/blob/main/doc/log_format.md) behind a 7-byte file header, one
# `wandb_internal_pb2.Record` per log record.
FILE_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version
RECORD_HEADER = struct.Struct("<IHB")  # crc32 (unchecked here), length, type: FULL=1 FIRST=2 MIDDLE=3 LAST=4
BLOCK = 32768


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, magic, _ = FILE_HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    records, pending, offset = [], b"", FILE_HEADER.size
    while offset + RECORD_HEADER.size <= len(data):
        if BLOCK - offset % BLOCK < RECORD_HEADER.size:  # a block's zero trailer
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size
        if kind == 0:  # zero padding at the end of the written part
            break
        pending += data[offset : offset + length]
        offset += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def offline_run(run_dir: Path, run_id: str) -> dict:
    """What one offline W&B run holds: id, group, name, config and the logged history rows."""
    (folder,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}")
    info = {"config": {}, "history": []}
    for record in wandb_records(folder / f"run-{run_id}.wandb"):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info |= {"id": record.run.run_id, "group": record.run.run_group, "name": record.run.display_name}
            info["config"] |= {item_key(i): json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            info["config"] |= {item_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            info["history"].append({item_key(i): json.loads(i.value_json) for i in record.history.item})
    return info


# ---------------------------------------------------------------- unit


def fake_run(tmp_path: Path, scheduler: str = "torch.optim.lr_scheduler.CosineAnnealingLR", **record) -> Path:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    saved = {
        "resume": None,
        "paths": {"output_dir": "${hydra:runtime.output_dir}"},
        "trainer": {"max_epochs": 2},
        "model": {
            "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
            "scheduler": {"_target_": scheduler, "_partial_": True},
        },
        "logger": {"wandb": {"_target_": resume.WANDB_FACTORY, "group": "g", "name": None}},
        "callbacks": {name: {"_target_": "x"} for name in resume.REQUIRED_CALLBACKS},  # conf/callbacks/default.yaml
    }
    OmegaConf.save(OmegaConf.create(saved), run / ".hydra" / "config.yaml")
    run_folder.update_run_json(run, status="completed", **record)
    return run


def test_a_resumed_run_logs_to_a_new_wandb_run_that_names_the_one_it_continues(tmp_path):
    run = fake_run(tmp_path, wandb_run_id="second", wandb_run_ids=["first", "second"], wandb_group="sweep_x")
    run_folder.update_run_json(run, wandb_name="fusion=late")
    cfg = OmegaConf.create({"resume": str(run), "paths": {"output_dir": str(run)}})
    loaded, _ = resume.load_run_to_resume(cfg, [])
    wandb = loaded.logger.wandb
    assert (wandb.resumed_from, wandb.segment, wandb.group, wandb.name) == ("second", 2, "sweep_x", "fusion=late")
    assert "run_id" not in wandb  # never the same id again: offline runs cannot be resumed


def test_resume_refuses_changes_a_restored_optimizer_cannot_take(tmp_path):
    run = fake_run(tmp_path)
    cfg = OmegaConf.create({"resume": str(run), "paths": {"output_dir": str(run)}})
    before = (run / "run.json").read_text()
    with pytest.raises(resume.ResumeError, match=r"model\.optimizer\._target_.*state of torch\.optim\.AdamW"):
        resume.load_run_to_resume(cfg, ["model.optimizer._target_=torch.optim.SGD"])
    plateau = fake_run(tmp_path / "plateau", scheduler="torch.optim.lr_scheduler.ReduceLROnPlateau")
    cfg = OmegaConf.create({"resume": str(plateau), "paths": {"output_dir": str(plateau)}})
    with pytest.raises(resume.ResumeError, match=r"model\.optimizer\.lr.*ReduceLROnPlateau"):
        resume.load_run_to_resume(cfg, ["model.optimizer.lr=0.1"])
    assert (run / "run.json").read_text() == before


def cosine_training_state(*, lr: float, t_max: int, epochs: int) -> tuple[torch.nn.Linear, dict]:
    """A checkpoint's optimizer and scheduler part after ``epochs`` epochs of AdamW + cosine."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max)
    for _ in range(epochs):
        layer(torch.ones(4, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    return layer, {"optimizer_states": [optimizer.state_dict()], "lr_schedulers": [scheduler.state_dict()]}


def test_configured_optimization_replaces_the_checkpoints_hyperparameters_and_horizon():
    layer, checkpoint = cosine_training_state(lr=1e-3, t_max=2, epochs=2)
    moments = checkpoint["optimizer_states"][0]["state"][0]["exp_avg"].clone()
    # The resumed run's config: lr 0.1, weight decay 0, horizon 4 epochs.
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    callbacks.apply_configured_optimization(checkpoint, optimizers=[optimizer], schedulers=[scheduler])
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    scheduler.load_state_dict(checkpoint["lr_schedulers"][0])
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.05) and group["initial_lr"] == 0.1 and group["weight_decay"] == 0.0
    assert scheduler.T_max == 4 and scheduler.last_epoch == 2
    assert torch.equal(optimizer.state[layer.weight]["exp_avg"], moments)  # the training state itself is kept
    scheduler.step()
    assert group["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi * 3 / 4)) / 2)


def test_unchanged_configuration_restores_the_checkpoint_exactly():
    layer, checkpoint = cosine_training_state(lr=1e-3, t_max=5, epochs=3)
    expected = {
        "groups": [dict(g) for g in checkpoint["optimizer_states"][0]["param_groups"]],
        "scheduler": dict(checkpoint["lr_schedulers"][0]),
    }
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    callbacks.apply_configured_optimization(checkpoint, optimizers=[optimizer], schedulers=[scheduler])
    assert checkpoint["optimizer_states"][0]["param_groups"] == expected["groups"]
    assert checkpoint["lr_schedulers"][0] == expected["scheduler"]


# ---------------------------------------------------------------- real processes

FAST = [*TINY_AVDIGITS, "trainer=cpu", "callbacks.early_stopping=null", "datamodule.batch_size=10"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, avdigits_raw) -> SimpleNamespace:
    """A 2-epoch run (lr 1e-3, cosine over 2 epochs) resumed to 4 epochs with lr 0.1; W&B offline."""
    root = tmp_path_factory.mktemp("resumed")
    run = root / "run"
    first = mmfw("mmfw-train", *FAST, "trainer.max_epochs=2", f"hydra.run.dir={run}", root=root)
    assert first.returncode == 0, output(first)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    first_part = SimpleNamespace(last_epoch=last["epoch"], best=run_json(run)["best_checkpoint"])
    second = mmfw("mmfw-train", f"resume={run}", "trainer.max_epochs=4", "model.optimizer.lr=0.1", root=root)
    assert second.returncode == 0, output(second)
    return SimpleNamespace(run=run, first_part=first_part)


@pytest.mark.slow
def test_last_checkpoint_is_the_last_epoch_even_when_it_was_not_the_best(resumed):
    # Lightning 2.6's save_last writes last.ckpt only with a new best: the resume would restart at epoch 1.
    assert resumed.first_part.best == "checkpoints/epoch_000.ckpt"  # this run's epoch 1 did not improve val/acc
    assert resumed.first_part.last_epoch == 1


@pytest.mark.slow
def test_each_resumed_part_is_its_own_offline_wandb_run_in_the_same_group(resumed):
    resumed_run = resumed.run
    record = run_json(resumed_run)
    first_id, second_id = record["wandb_run_ids"]
    assert first_id != second_id and record["wandb_run_id"] == second_id
    first, second = offline_run(resumed_run, first_id), offline_run(resumed_run, second_id)
    assert first["group"] == second["group"] and first["name"] == second["name"]
    assert "resumed_from" not in first["config"]
    assert second["config"]["resumed_from"] == first_id and second["config"]["segment"] == 1
    first_steps = [row["trainer/global_step"] for row in first["history"]]
    second_steps = [row["trainer/global_step"] for row in second["history"]]
    assert first_steps and second_steps and min(second_steps) >= max(first_steps)
    # Each part keeps the epochs it validated: the first part's history is not overwritten by the second.
    assert [row["epoch"] for row in first["history"] if "val/acc" in row] == [0, 1]
    assert [row["epoch"] for row in second["history"] if "val/acc" in row] == [2, 3]


@pytest.mark.slow
def test_resume_with_a_new_lr_and_horizon_trains_with_them(resumed):
    resumed_run = resumed.run
    rows = list(csv.DictReader(open(resumed_run / "csv" / "metrics.csv")))
    lrs = [float(row["lr-AdamW"]) for row in rows if row.get("lr-AdamW")]
    # Cosine from the new lr over the new 4 epochs, continued at epoch 2.
    expected = [1e-3, 1e-3 * 0.5, 0.1 * 0.5, 0.1 * (1 + math.cos(math.pi * 3 / 4)) / 2]
    assert lrs == pytest.approx(expected)
    resolved = OmegaConf.load(resumed_run / run_folder.RESOLVED_CONFIG)
    assert resolved.model.scheduler.T_max == 4 and resolved.model.optimizer.lr == 0.1


@pytest.mark.slow
def test_a_changed_value_the_checkpoint_cannot_hold_is_refused_before_the_run_folder_changes(resumed):
    run = resumed.run
    before = {name: (run / name).read_bytes() for name in ("run.json", run_folder.RESOLVED_CONFIG, "csv/metrics.csv")}
    wider = mmfw("mmfw-train", f"resume={run}", "fusion.out_dim=32", root=run.parent)
    assert wider.returncode != 0
    assert "fusion.out_dim=32" in output(wider) and "fusion.mlp" in output(wider) and "start a new run" in output(wider)
    shorter = mmfw("mmfw-train", f"resume={run}", "trainer.max_epochs=3", root=run.parent)
    assert shorter.returncode != 0 and "trainer.max_epochs=3" in output(shorter) and "4 epochs" in output(shorter)
    assert {name: (run / name).read_bytes() for name in before} == before
