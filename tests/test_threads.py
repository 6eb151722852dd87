"""The thread policy (mmfw.threads): the count it computes, and that every run applies and records it."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import compose_train
from test_feature_cache import overrides, write_manifest

from mmfw.threads import apply_thread_policy, available_cores, local_processes, thread_count
from mmfw.train import train


@pytest.mark.parametrize(
    ("setting", "cores", "processes", "env", "expected"),
    [
        ("auto", 2, 1, {}, 2),  # all cores this process may use
        ("auto", 2, 2, {}, 1),  # two DDP ranks on two cores
        ("auto", 16, 3, {}, 5),  # rounded down
        ("auto", 2, 4, {}, 1),  # at least one
        ("auto", 16, 1, {"OMP_NUM_THREADS": "3"}, 3),  # an explicit OMP_NUM_THREADS wins
        (4, 2, 2, {"OMP_NUM_THREADS": "1"}, 4),  # a number is used as it is
        ("6", 2, 1, {}, 6),
    ],
)
def test_thread_count(setting, cores, processes, env, expected):
    assert thread_count(setting, cores=cores, processes=processes, env=env) == expected


@pytest.mark.parametrize("setting", [0, "-1", "many"])
def test_bad_setting_names_the_key(setting):
    with pytest.raises(ValueError, match="threads must be `auto` or a positive number"):
        thread_count(setting, cores=2, processes=1, env={})


def test_processes_sharing_the_cores():
    assert local_processes({"accelerator": "cpu", "devices": 1}, None, {}) == 1
    assert local_processes({"accelerator": "cpu", "devices": 2}, None, {}) == 2  # trainer=ddp_cpu
    assert local_processes({"accelerator": "cpu", "devices": [0, 1, 2]}, None, {}) == 3
    assert local_processes({"accelerator": "cpu", "devices": 2}, {"n_jobs": 3}, {}) == 6  # a parallel launcher
    assert local_processes({"accelerator": "cpu", "devices": 4}, None, {"SLURM_NTASKS": "4"}) == 1  # srun's own cores


def test_cores_are_the_affinity_not_the_machine():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity API on this platform")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_policy_is_applied(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        record = apply_thread_policy("auto", {"accelerator": "cpu", "devices": 1})
        assert record["threads"] == available_cores() == torch.get_num_threads()
        assert os.environ["OMP_NUM_THREADS"] == str(available_cores())  # what DDP ranks started later inherit
        record = apply_thread_policy(1, {"accelerator": "cpu", "devices": 1})
        assert record["threads"] == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_every_run_applies_and_records_it(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    manifest = write_manifest(tmp_path / "data")
    cfg = compose_train(overrides(manifest, tmp_path / "cache", "trainer.max_epochs=1", "threads=2"), tmp_path / "run")
    torch.set_num_threads(1)
    try:
        train(cfg)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["threads"]["threads"] == 2 and record["threads"]["setting"] == "2"
