"""Optuna sweeps (``hparams_search=optuna``): Hydra callbacks that continue a study stored in the sweep folder and
fix the study's direction from ``monitor.metric=auto`` before the sweeper creates it."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mmfw.runs import run_folder

log = logging.getLogger(__name__)


class ResumeOptunaStudy(Callback):
    """Hydra callback: continue an Optuna study stored in the sweep folder instead of starting n_trials more.

    When the study already exists (the sweep command is rerun with ``hydra.sweep.dir=<sweep folder>``):
    trials left ``RUNNING`` by the interrupted sweep are marked failed and queued again with the same parameters;
    ``n_trials`` becomes the number still to run; job folders continue the numbering (job folder = trial number);
    the sampler's seed moves on so that random start-up trials do not repeat.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        if not sweeper.get("storage"):
            return
        import optuna
        from optuna.trial import TrialState

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
        except KeyError:
            return  # a new study
        trials = study.get_trials(deepcopy=False)
        offset = len(trials)
        interrupted = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        for new_number, trial in enumerate(interrupted, start=offset):
            # A queued (WAITING) trial is closed and queued again too, so that trial numbers stay job numbers.
            mark_trial_interrupted(study, trial)
            study.tell(trial.number, state=TrialState.FAIL)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # enqueue_trial is "experimental" in optuna 2.x
                study.enqueue_trial(trial.params or trial.system_attrs.get("fixed_params", {}))
            job_dir = sweep_dir / str(trial.number)
            if (job_dir / run_folder.RUN_JSON).is_file():
                run_folder.update_run_json(
                    job_dir, status="interrupted", error="the sweep was interrupted", rerun_as=str(new_number)
                )
        finished = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
        remaining = max(int(sweeper.n_trials) - len(finished), 0)
        log.info(
            "Continuing Optuna study %r in %s: %d trials finished, %d interrupted ones queued again, %d to run",
            sweeper.study_name,
            sweep_dir,
            len(finished),
            len(interrupted),
            remaining,
        )
        with read_write(config.hydra), open_dict(config.hydra):
            sweeper.n_trials = remaining
            if sweeper.sampler.get("seed") is not None:
                sweeper.sampler.seed = int(sweeper.sampler.seed) + offset
            # Hydra composes each job from the hydra overrides, so the folder numbering travels as one.
            config.hydra.overrides.hydra.append(f"hydra.sweep.subdir=${{mmfw.job_num:{offset}}}")


def mark_trial_interrupted(study: Any, trial: Any) -> None:
    """Set the user attribute ``interrupted`` on a trial of ``study`` that this process did not ``ask()`` for.

    Optuna has no public call for it: ``Trial.set_user_attr`` needs the live ``Trial`` that ``ask()`` returned, and a
    ``FrozenTrial`` from ``get_trials()`` carries only its private ``_trial_id``. The storage call is what
    ``Trial.set_user_attr`` runs; ``tests/test_private_apis.py`` fails if it
    changes.
    """
    study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)


class ResolveAutoMonitor(Callback):
    """Hydra callback: resolve ``monitor.metric=auto`` before the sweeper reads its direction from ``monitor.mode``.

    ``auto`` is decided from the data (the task, which a manifest may infer from the target's values, and the class
    balance), but an Optuna study's direction is fixed when the study is created, before any job reads the data; left
    as ``auto`` it would maximise ``val/mse``. So the sweep's config gets the metric every job will choose (the same
    data and rule: ``mmfw.runs.config.default_monitor``), and ``monitor.mode`` and the direction follow it.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.monitor.metric != "auto":
            return
        import hydra

        from mmfw.runs.config import apply_defaults, default_monitor

        probe = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        with open_dict(probe):
            del probe.hydra  # the data does not depend on it; ${hydra:...} does not resolve here
            probe.paths.output_dir = probe.paths.log_dir
        apply_defaults(probe)
        datamodule = hydra.utils.instantiate(probe.datamodule)
        datamodule.prepare_data()
        datamodule.setup("fit")
        default_monitor(probe, datamodule)
        log.info("monitor.metric=auto resolves to %s for this sweep's data", probe.monitor.metric)
        with read_write(config), open_dict(config):
            config.monitor.metric = probe.monitor.metric
