"""Sweeps: failed jobs are recorded and the sweep goes on; summaries; Optuna resumes; launchers compose and run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from cli_helpers import BIN, env_for, mmfw, only_child, output, run_json
from conftest import TINY_AVDIGITS, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, read_write

from mmfw.runs import sweep
from mmfw.runs.run_folder import update_run_json
from mmfw.runs.study import ResolveAutoMonitor, ResumeOptunaStudy
from mmfw.train import CONFIG_DIR

FUSIONS = sorted(p.stem for p in (Path(CONFIG_DIR) / "fusion").glob("*.yaml"))


def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def fake_job(sweep_dir: Path, num: int, status: str, **fields) -> Path:
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    update_run_json(job, status=status, overrides=[f"fusion=f{num}", "seed=0"], **fields)
    return job


# ---------------------------------------------------------------- unit


def test_run_folders_are_unique_per_invocation():
    first, second = compose_with_hydra([]), compose_with_hydra([])
    assert first.hydra.run.dir != second.hydra.run.dir
    assert first.hydra.sweep.dir != second.hydra.sweep.dir
    # One invocation uses one id for both (the resolver is cached per config).
    assert first.hydra.run.dir[-6:] == first.hydra.sweep.dir[-6:]


def test_summary_lists_every_job_that_did_not_complete(tmp_path):
    fake_job(tmp_path, 0, "completed", monitor={"metric": "val/acc", "mode": "max", "best": 0.5})
    fake_job(tmp_path, 1, "failed", error="NonFiniteLossError: training loss is nan at global step 3")
    fake_job(tmp_path, 2, "running")
    fake_job(tmp_path, 3, "interrupted", rerun_as="4")  # an Optuna trial queued again: history, not a failure
    summary = sweep.summarize_sweep(tmp_path)
    assert summary["jobs"] == 4 and summary["completed"] == 1
    assert [(job["job"], job["status"]) for job in summary["failed"]] == [("1", "failed"), ("2", "running")]
    assert "global step 3" in summary["failed"][0]["error"]


def test_summary_callback_writes_the_file_and_exits_nonzero(tmp_path, capsys):
    fake_job(tmp_path, 0, "completed")
    fake_job(tmp_path, 1, "failed", error="ValueError: boom")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit, match="1 of 2 jobs did not complete"):
        sweep.SweepSummary().on_multirun_end(config)
    saved = json.loads((tmp_path / sweep.SUMMARY_FILE).read_text())
    assert saved["failed"][0]["error"] == "ValueError: boom"
    assert "ValueError: boom" in capsys.readouterr().err
    (tmp_path / "1" / "run.json").unlink()
    update_run_json(tmp_path / "1", status="completed")
    sweep.SweepSummary().on_multirun_end(config)  # all completed: no exit


def test_a_sweep_that_stops_early_writes_its_summary_and_lists_the_jobs_not_started(tmp_path, capsys):
    fake_job(tmp_path, 0, "completed")
    fake_job(tmp_path, 1, "interrupted", error="stopped by an interrupt at global step 3")
    basic = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": None}
    config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path)},
                "sweeper": {**basic, "params": {"seed": "0"}},
                "overrides": {"task": ["fusion=f0,f1,f2,f3"]},
            }
        }
    )
    callback = sweep.SweepSummary()
    callback.on_multirun_start(config)
    callback.on_stopped_early()  # what the process does on its way out after Ctrl-C
    saved = json.loads((tmp_path / sweep.SUMMARY_FILE).read_text())
    assert saved["stopped_early"] and saved["planned"] == 4
    assert saved["not_started"] == [["seed=0", "fusion=f2"], ["seed=0", "fusion=f3"]]
    assert [(job["job"], job["status"]) for job in saved["failed"]] == [("1", "interrupted")]
    err = capsys.readouterr().err
    assert "2 jobs did not start" in err and "fusion=f3" in err


def test_a_failing_job_is_recorded_and_returns_none_in_a_multirun(tmp_path, monkeypatch):
    cfg = compose_train([], tmp_path)

    def fail(cfg):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):  # a single run raises
        sweep.run_job(fail, cfg)
    monkeypatch.setattr(sweep, "in_multirun", lambda: True)
    assert sweep.run_job(fail, cfg) is None
    assert run_json(tmp_path)["status"] == "failed" and run_json(tmp_path)["error"] == "ValueError: boom"


def test_a_rerun_sweep_skips_finished_jobs_and_resumes_interrupted_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "in_multirun", lambda: True)
    cfg = compose_train([], tmp_path)
    update_run_json(tmp_path, status="completed", monitor={"best": 0.7}, overrides=[])
    assert sweep.run_job(lambda cfg: pytest.fail("ran again"), cfg) == 0.7
    update_run_json(tmp_path, overrides=["fusion=late"])  # the folder belongs to another command's job
    assert sweep.run_job(lambda cfg: pytest.fail("ran"), cfg) is None
    update_run_json(tmp_path, overrides=[])
    update_run_json(tmp_path, status="running")
    (tmp_path / "checkpoints").mkdir()
    with __import__("zipfile").ZipFile(tmp_path / "checkpoints" / "last.ckpt", "w") as f:
        f.writestr("data.pkl", b"")
    assert sweep.run_job(lambda cfg: cfg.resume, cfg) == str(tmp_path)


def test_resume_optuna_study_continues_the_count(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="train", storage=storage, direction="maximize")
    for value in (0.1, 0.2):
        trial = study.ask({"x": optuna.distributions.UniformDistribution(0, 1)})
        study.tell(trial, value)
    killed = study.ask({"x": optuna.distributions.UniformDistribution(0, 1)})  # left RUNNING by a killed sweep
    fake_job(tmp_path, killed.number, "running")
    config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path)},
                "sweeper": {"storage": storage, "study_name": "train", "n_trials": 5, "sampler": {"seed": 7}},
                "overrides": {"hydra": []},
            }
        }
    )
    ResumeOptunaStudy().on_multirun_start(config)
    assert config.hydra.sweeper.n_trials == 3  # 5 - 2 finished; the killed trial runs again
    assert config.hydra.sweeper.sampler.seed == 7 + 3
    assert config.hydra.overrides.hydra == ["hydra.sweep.subdir=${mmfw.job_num:3}"]
    trials = optuna.load_study(study_name="train", storage=storage).trials
    assert trials[2].state == optuna.trial.TrialState.FAIL and trials[2].user_attrs["interrupted"]
    assert trials[3].state == optuna.trial.TrialState.WAITING
    assert trials[3].system_attrs["fixed_params"] == {"x": killed.params["x"]}
    assert run_json(tmp_path / "2")["rerun_as"] == "3"


def test_optuna_preset_searches_every_fusion_config():
    cfg = compose_with_hydra(["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_.endswith("TPESampler")
    choices = sweeper.params.fusion.removeprefix("choice(").removesuffix(")").split(", ")
    assert sorted(choices) == FUSIONS
    assert {"model.optimizer.lr", "fusion.dropout", "encoder.image.out_dim"} <= set(sweeper.params)
    assert sweeper.direction == "maximize" and sweeper.max_failure_rate == 1.0
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert any(c._target_ == "mmfw.runs.study.ResumeOptunaStudy" for c in cfg.hydra.callbacks.values())
    # The search space applies to every fusion: each has the keys the sweep sets.
    for name in FUSIONS:
        OmegaConf.select(compose_with_hydra([f"fusion={name}"]), "fusion.dropout", throw_on_missing=True)


def test_slurm_preset_composes():
    cfg = compose_with_hydra(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 1
    assert launcher.submitit_folder.startswith(cfg.hydra.sweep.dir)


def test_wandb_runs_are_grouped_by_sweep_and_named_by_overrides(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cfg = compose_with_hydra(["fusion=late", "seed=3"])
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == "train"
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.override_dirname = "fusion=late"
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == Path(cfg.hydra.sweep.dir).name
    assert cfg.logger.wandb.name == "fusion=late"


# ---------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_parallel_grid_sweep_survives_a_nan_job(tmp_path, avdigits_raw):
    """joblib runs two jobs at once; the lr=1e30 job fails with a NaN loss, the other completes."""
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.optimizer.lr=1e-3,1e30"]
    result = mmfw("mmfw-train", *args, "trainer.max_epochs=1", "logger=csv", *TINY_AVDIGITS, root=tmp_path)
    assert result.returncode == 1, output(result)
    sweep_dir = only_child(tmp_path / "logs" / "train" / "multiruns")
    summary = json.loads((sweep_dir / sweep.SUMMARY_FILE).read_text())
    assert summary["jobs"] == 2 and summary["completed"] == 1
    (failed,) = summary["failed"]
    assert "model.optimizer.lr=1e+30" in failed["overrides"] and "NonFiniteLossError" in failed["error"]
    assert "global step" in failed["error"] and "1 of 2 jobs did not complete" in result.stderr
    bad, good = (sweep_dir / failed["job"]), sweep_dir / ({"0", "1"} - {failed["job"]}).pop()
    assert run_json(bad)["status"] == "failed" and not list(bad.glob("checkpoints/*.ckpt"))
    assert run_json(good)["status"] == "completed" and (good / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_writes_the_summary(tmp_path, avdigits_raw):
    args = ["-m", "seed=0,1,2", "trainer.max_epochs=1000", "logger=csv", *TINY_AVDIGITS]
    command = [str(BIN / "mmfw-train"), *args]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while not list((tmp_path / "logs").glob("train/multiruns/*/0/checkpoints/epoch_000.ckpt")):
        assert proc.poll() is None, proc.communicate()[1][-3000:].decode()
        assert time.monotonic() < deadline, "the first job saved no checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    sweep_dir = only_child(tmp_path / "logs" / "train" / "multiruns")
    summary = json.loads((sweep_dir / sweep.SUMMARY_FILE).read_text())
    assert summary["stopped_early"] and summary["planned"] == 3
    assert [job["status"] for job in summary["all_jobs"]] == ["interrupted"]
    assert [[o for o in job if o.startswith("seed=")] for job in summary["not_started"]] == [["seed=1"], ["seed=2"]]
    assert "2 jobs did not start" in err.decode()


@pytest.mark.slow
def test_optuna_sweep_resumes_where_it_stopped(tmp_path, avdigits_raw):
    args = ["-m", "hparams_search=optuna", "trainer.max_epochs=1", *TINY_AVDIGITS]  # W&B (offline) + CSV
    first = mmfw("mmfw-train", *args, "hydra.sweeper.n_trials=2", root=tmp_path)
    assert first.returncode == 0, output(first)
    sweep_dir = only_child(tmp_path / "logs" / "train" / "multiruns")
    again = mmfw("mmfw-train", *args, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep_dir}", root=tmp_path)
    assert again.returncode == 0, output(again)
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    assert json.loads((sweep_dir / sweep.SUMMARY_FILE).read_text())["completed"] == 3
    # One W&B run per trial, all in the sweep's group, named by the trial's parameters.
    records = [run_json(sweep_dir / n) for n in ("0", "1", "2")]
    assert len({r["wandb_run_id"] for r in records}) == 3
    assert {r["wandb_group"] for r in records} == {sweep_dir.name}
    assert all("fusion=" in r["wandb_name"] and "model.optimizer.lr=" in r["wandb_name"] for r in records)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path, avdigits_raw):
    args = ["-m", "hydra/launcher=submitit_local", "seed=0,1", "trainer.max_epochs=1", "logger=csv", *TINY_AVDIGITS]
    result = mmfw("mmfw-train", *args, root=tmp_path)
    assert result.returncode == 0, output(result)
    sweep_dir = only_child(tmp_path / "logs" / "train" / "multiruns")
    assert [run_json(sweep_dir / n)["status"] for n in ("0", "1")] == ["completed", "completed"]
    assert (sweep_dir / ".submitit").is_dir()
    compared = mmfw("mmfw-compare", str(sweep_dir), root=tmp_path)
    assert compared.returncode == 0, output(compared)
    assert "± " in compared.stdout and "(2)" in compared.stdout  # the two seeds form one row


def test_a_sweep_rerun_with_other_overrides_leaves_the_jobs_configs_alone(tmp_path):
    """Hydra writes each job's .hydra/ before the job starts: a rerun of a sweep folder with another command is
    refused before that, so the finished jobs keep the config mmfw-eval rebuilds them from."""
    sweep_dir = tmp_path / "sweep"
    job = fake_job(sweep_dir, 0, "completed")  # overrides fusion=f0 seed=0
    (job / ".hydra" / "overrides.yaml").write_text("- fusion=f0\n- seed=0\n")
    before = {p.name: p.read_text() for p in (job / ".hydra").iterdir()}
    result = mmfw(
        "mmfw-train", "-m", "fusion=late,concat", f"hydra.sweep.dir={sweep_dir}", *TINY_AVDIGITS, root=tmp_path
    )
    assert result.returncode != 0, output(result)
    assert "job 0" in output(result) and "fusion=f0 seed=0" in output(result), output(result)
    assert "hydra.sweep.dir" in output(result)
    assert {p.name: p.read_text() for p in (job / ".hydra").iterdir()} == before
    assert not (sweep_dir / "1").exists()


def test_a_rerun_of_the_same_sweep_command_is_not_refused(tmp_path):
    fake_job(tmp_path, 0, "completed")  # overrides fusion=f0 seed=0
    basic = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": None}
    config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(tmp_path)}, "sweeper": {**basic, "params": {}},
                   "overrides": {"task": ["fusion=f0,f1", "seed=0"]}}}
    )  # fmt: skip
    sweep.check_job_folders(config)  # job 0 is fusion=f0 seed=0: the same job
    with read_write(config):
        config.hydra.overrides.task = ["fusion=f1,f0", "seed=0"]
    with pytest.raises(SystemExit, match=r"job 0 .*fusion=f0 seed=0.*fusion=f1 seed=0"):
        sweep.check_job_folders(config)


def test_optuna_direction_follows_the_metric_auto_resolves_to(tmp_path):
    """``monitor.metric=auto`` is resolved from the data before the sweeper creates its study: a regression target
    (inferred from the values, ``datamodule.task`` unset) is ``val/mse``, minimised; a classification one maximised."""
    rows = [{"x": float(i), "label": f"{i % 2}", "y": 0.5 * i} for i in range(40)]
    manifest = tmp_path / "rows.csv"
    manifest.write_text("x,label,y\n" + "".join(f"{r['x']},{r['label']},{r['y']}\n" for r in rows))
    common = [
        "hparams_search=optuna",
        "datamodule=manifest",
        f"datamodule.manifest={manifest}",
        "+datamodule.columns={t: {kind: tabular, numeric: [x]}}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    for target, metric, direction in (("y", "val/mse", "minimize"), ("label", "val/acc", "maximize")):
        cfg = compose_with_hydra([*common, f"datamodule.target={target}"])
        assert cfg.monitor.metric == "auto"
        (callback,) = [c for c in cfg.hydra.callbacks.values() if c._target_ == "mmfw.runs.study.ResolveAutoMonitor"]
        ResolveAutoMonitor().on_multirun_start(cfg)
        assert cfg.monitor.metric == metric and cfg.monitor.mode == direction[:3]
        assert cfg.hydra.sweeper.direction == direction, target
