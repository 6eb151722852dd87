"""Sweeps that survive failures: ``mmfw-train -m ...`` and ``mmfw-train -m hparams_search=optuna``.

* A job that raises is recorded as failed (its run.json has ``status: failed`` and the error) and the sweep goes on;
  for Optuna it is a failed trial. A single run that fails still raises.
* A rerun with another command in the same sweep folder is refused before Hydra writes into a job folder
  (:func:`check_job_folders`): every job keeps the ``.hydra/`` config it ran with.
* ``SweepSummary`` (a Hydra callback, conf/hydra/default.yaml) writes ``<sweep>/sweep_summary.json`` and prints which
  jobs failed and why when the sweep ends; the exit status is 1 if any job did not complete. A sweep stopped before
  its end (Ctrl-C, SIGTERM, a sweeper error) writes it too, with the jobs that never started.
* Rerunning a sweep's command with ``hydra.sweep.dir=<sweep folder>`` continues it: a job whose folder says
  ``completed`` or ``failed`` is not run again, one that was running or interrupted resumes from its last checkpoint,
  and ``mmfw.runs.study.ResumeOptunaStudy`` (conf/hparams_search/optuna.yaml) continues the Optuna study stored in
  the folder.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mmfw.runs import run_folder
from mmfw.runs.resolvers import in_multirun

log = logging.getLogger(__name__)

SUMMARY_FILE = "sweep_summary.json"
# Set by DDP launchers; a job that starts DDP processes itself must not leave them to the next job of the sweep.
DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def task_overrides() -> list[str]:
    """This job's command-line overrides (what makes it differ from the defaults)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run_job(train: Callable[[DictConfig], float | None], cfg: DictConfig) -> float | None:
    """Run ``train(cfg)`` as a single run (errors propagate) or as one job of a multirun (errors are recorded)."""
    if not in_multirun():
        return train(cfg)
    job_dir = Path(cfg.paths.output_dir)
    previous = run_folder.read_run_json(job_dir)
    if previous.get("overrides") not in (None, task_overrides()):
        log.error(
            "Job folder %s holds a run of another command (%s): not run. Continue a sweep with the command that "
            "started it, or give this one a new hydra.sweep.dir",
            job_dir,
            " ".join(previous["overrides"]),
        )
        return None
    if previous.get("status") in ("completed", "failed"):
        log.info("Job %s already %s (delete the folder to run it again)", job_dir, previous["status"])
        return (previous.get("monitor") or {}).get("best")
    if previous and run_folder.last_checkpoint(job_dir) is not None:
        with open_dict(cfg):
            cfg.resume = str(job_dir)
    try:
        with ddp_processes_run_this_job(cfg):
            return train(cfg)
    except Exception as error:
        log.exception("Job %s failed; the sweep goes on", job_dir)
        if run_folder.read_run_json(job_dir).get("status") != "failed":
            # train() records its own errors; this one came before it could (e.g. a resume that cannot start).
            error_text = f"{type(error).__name__}: {error}"
            run_folder.finish_run(job_dir, status="failed", error=error_text, overrides=task_overrides())
        return None


@contextlib.contextmanager
def ddp_processes_run_this_job(cfg: DictConfig) -> Iterator[None]:
    """Make Lightning's DDP launcher start ranks > 0 as single runs of this job, in this job's folder.

    Lightning relaunches ``sys.argv`` with ``hydra.run.dir=<HydraConfig run.dir>`` for every other rank. Inside a
    multirun that would start the whole sweep again in another folder, so for the duration of the job the command
    line is this job's overrides and run.dir is its folder. Afterwards the process group and the DDP environment
    variables the launcher set are removed, so the next job of the sweep starts its own processes.
    """
    if uses_ddp_subprocesses(cfg.trainer):
        main_spec = getattr(sys.modules["__main__"], "__spec__", None)
        if main_spec is not None and main_spec.name != "mmfw.train":
            raise RuntimeError(
                f"trainer.strategy={cfg.trainer.strategy} with {cfg.trainer.devices} devices inside a sweep whose jobs "
                f"run under {main_spec.name}: use the basic launcher (jobs one after another, each on all devices) or "
                "hydra/launcher=slurm (srun starts one process per device)"
            )
    argv, env = list(sys.argv), {name: os.environ.get(name) for name in DDP_ENV}
    hydra_cfg = HydraConfig.instance().cfg
    run_dir = hydra_cfg.hydra.run.dir
    resume = [f"resume={cfg.resume}"] if cfg.get("resume") else []
    sys.argv = [argv[0], *[o for o in task_overrides() if not o.startswith("resume=")], *resume]
    with read_write(hydra_cfg.hydra.run):
        hydra_cfg.hydra.run.dir = str(cfg.paths.output_dir)
    had_process_group = _process_group_active()
    try:
        yield
    finally:
        sys.argv = argv
        with read_write(hydra_cfg.hydra.run):
            hydra_cfg.hydra.run.dir = run_dir
        if not had_process_group and _process_group_active():
            sys.modules["torch"].distributed.destroy_process_group()
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _process_group_active() -> bool:
    torch = sys.modules.get("torch")  # not imported (a job that failed its config checks): no process group either
    return torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def uses_ddp_subprocesses(trainer_cfg: DictConfig) -> bool:
    """Whether Lightning will start processes for other ranks by running this script again."""
    strategy = trainer_cfg.get("strategy", "auto")
    if isinstance(strategy, DictConfig):  # a DDPStrategy node, e.g. with a timeout (conf/trainer/ddp.yaml)
        ddp = str(strategy.get("_target_")).endswith(".DDPStrategy")
        popen = ddp and strategy.get("start_method") in (None, "popen")
    else:
        popen = str(strategy).startswith("ddp") and str(strategy) not in ("ddp_spawn", "ddp_fork", "ddp_notebook")
    devices = trainer_cfg.get("devices", 1)
    many = devices in (-1, "auto") or (isinstance(devices, int) and devices > 1) or str(devices).count(",") > 0
    launched_outside = any(name in os.environ for name in ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"))
    return popen and many and not launched_outside


# ---------------------------------------------------------------- summary


def summarize_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """Every job folder of the sweep with its status, error and score; which did not complete."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    for job_dir in run_folder.find_runs(sweep_dir):
        record = run_folder.read_run_json(job_dir)
        monitor = record.get("monitor") or {}
        jobs.append(
            {
                "job": str(job_dir.relative_to(sweep_dir)),
                "status": record.get("status", "not started"),
                "overrides": record.get("overrides") or _hydra_overrides(job_dir),
                "error": record.get("error"),
                "metric": monitor.get("metric"),
                "best": monitor.get("best"),
                "rerun_as": record.get("rerun_as"),
            }
        )
    # A trial interrupted with the sweep and run again under another job number is history, not a failure.
    problems = [job for job in jobs if job["status"] != "completed" and job["rerun_as"] is None]
    return {
        "sweep": str(sweep_dir),
        "jobs": len(jobs),
        "completed": sum(job["status"] == "completed" for job in jobs),
        "failed": [{k: job[k] for k in ("job", "status", "overrides", "error")} for job in problems],
        "all_jobs": jobs,
    }


def planned_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of every job a basic-sweeper multirun launches, computed as ``BasicSweeper.sweep`` does.

    None for other sweepers: Optuna chooses each trial's parameters as it goes.
    """
    sweeper = config.hydra.get("sweeper") or {}
    if sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return None
    arguments = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    arguments += OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    # The config loader expands glob(...) sweeps over config groups; it exists while Hydra runs.
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


JOB_NUM_SUBDIR = "${hydra.job.num}"  # conf/hydra/default.yaml: job folder = job number


def check_job_folders(config: DictConfig) -> None:
    """Refuse a sweep folder that holds another command's jobs, before Hydra writes into any job folder.

    Hydra saves each job's ``.hydra/`` (config, overrides) before the job function runs, so a job that
    :func:`run_job` then refuses would still have its recorded config replaced by another command's, and mmfw-eval
    would rebuild it from that. Basic sweeper: job ``i`` of this command must be job ``i`` of the folder (the same
    overrides) or a new folder. Optuna: job folders are numbered on from the stored study
    (:class:`mmfw.runs.study.ResumeOptunaStudy`); without a ``storage`` the folder must hold no jobs yet. A custom
    ``hydra.sweep.subdir`` is not checked (its folders cannot be told from here).
    """
    sweep_dir = Path(config.hydra.sweep.dir)
    jobs = {p.name: p for p in run_folder.find_runs(sweep_dir)} if sweep_dir.is_dir() else {}
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir", JOB_NUM_SUBDIR)
    if not jobs or subdir != JOB_NUM_SUBDIR:
        return
    planned = planned_jobs(config)
    if planned is None:
        if not (config.hydra.get("sweeper") or {}).get("storage"):
            raise SystemExit(
                f"hydra.sweep.dir={sweep_dir} already holds jobs {sorted(jobs)} and this sweeper has no storage "
                "to continue from: give this sweep a new hydra.sweep.dir"
            )
        return
    for num, overrides in enumerate(planned):
        job_dir = jobs.get(str(num))
        held = job_dir and (run_folder.read_run_json(job_dir).get("overrides") or _hydra_overrides(job_dir))
        if held and set(held) != set(overrides):
            raise SystemExit(
                f"hydra.sweep.dir={sweep_dir}: job {num} holds a run of another command ({' '.join(held)}), "
                f"this sweep's job {num} is {' '.join(overrides)}. Continue a sweep with the command that started "
                "it, or give this one a new hydra.sweep.dir"
            )


def _hydra_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    import yaml

    return list(yaml.safe_load(path.read_text()) or [])


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 160
    console.print(
        f"Sweep {summary['sweep']}: {summary['completed']} of {summary['jobs']} jobs completed, "
        f"{len(summary['failed'])} did not."
    )
    if summary["failed"]:
        # The overrides every job shares say nothing about which job this is.
        shared = set.intersection(*(set(job["overrides"]) for job in summary["all_jobs"]))
        table = Table(title="Jobs that did not complete", show_lines=True)
        for column in ("job", "status", "overrides", "error"):
            table.add_column(column, overflow="fold")
        for job in summary["failed"]:
            overrides = " ".join(o for o in job["overrides"] if o not in shared or len(summary["all_jobs"]) == 1)
            table.add_row(Text(job["job"]), Text(job["status"]), Text(overrides), Text(job["error"] or ""))
        console.print(table)
    if summary.get("stopped_early"):
        missing = summary["not_started_count"]
        console.print(
            f"The sweep stopped before its end: {missing} job{'' if missing == 1 else 's'} did not start"
            + (":" if summary["not_started"] else ".")
        )
        for job in summary["not_started"] or []:
            console.print(Text("  " + " ".join(job)))
        console.print(f"Continue it by rerunning the same command with hydra.sweep.dir={summary['sweep']}")
    console.print(
        f"Summary: {Path(summary['sweep']) / SUMMARY_FILE}; compare runs with: mmfw-compare {summary['sweep']}"
    )


class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, summarise it, and exit with status 1 if any job did not complete.

    Hydra calls ``on_multirun_end`` only when the sweeper returns. A sweep stopped before that (Ctrl-C, SIGTERM
    during a job, a sweeper error) is summarised on the process's way out (``atexit``), with ``stopped_early`` set
    and the jobs that never started listed.
    """

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.jobs_before = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_job_folders(config)  # before any job folder is written into
        # The sweep folder holds the Optuna study (sqlite), which is opened before the first job creates the folder.
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # Kept, not copied: ResumeOptunaStudy sets the number of trials still to run in this same config.
        self.config, self.jobs_before = config, len(run_folder.find_runs(sweep_dir))
        atexit.register(self.on_stopped_early)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self.on_stopped_early)
        self.config = config
        summary = self.write(stopped_early=False)
        if summary["failed"]:
            sweep_dir = summary["sweep"]
            raise SystemExit(f"{len(summary['failed'])} of {summary['jobs']} jobs did not complete: see {sweep_dir}")

    def on_stopped_early(self) -> None:
        atexit.unregister(self.on_stopped_early)
        self.write(stopped_early=True)

    def write(self, *, stopped_early: bool) -> dict[str, Any]:
        """Summarise the sweep into ``<sweep>/sweep_summary.json`` and print it."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        summary = summarize_sweep(sweep_dir)
        summary |= {"stopped_early": stopped_early, **self.not_started(summary["all_jobs"])}
        (sweep_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print_summary(summary)
        return summary

    def not_started(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        """This invocation's jobs that have no job folder among ``jobs``: listed for the basic sweeper, counted for
        Optuna."""
        folders = [set(job["overrides"]) for job in jobs]
        planned = planned_jobs(self.config)
        if planned is None:  # Optuna: n_trials (still) to run in this invocation, each in a new job folder
            trials = int((self.config.hydra.get("sweeper") or {}).get("n_trials") or 0)
            started = len(folders) - self.jobs_before
            return {"planned": trials, "not_started": None, "not_started_count": max(trials - started, 0)}
        missing = [job for job in planned if set(job) not in folders]
        return {"planned": len(planned), "not_started": missing, "not_started_count": len(missing)}
