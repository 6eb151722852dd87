"""The thread policy every run applies first (``threads`` in conf/train.yaml).

torch's default is one intra-op thread per core of the machine, whatever share of it the process may use: on a
shared 2-core machine, a run with the default took 10 min where ``OMP_NUM_THREADS=1`` took 55 s (threads of several
processes fighting over the same cores). ``threads: auto`` therefore gives each process its share:

* ``OMP_NUM_THREADS`` when set (the user's or a launcher's explicit choice; Lightning's DDP launcher also sets it
  for the ranks it starts), else
* the cores this process may run on (``os.sched_getaffinity``: a cgroup/cpuset, ``taskset``, a SLURM allocation),
  divided by the processes that share them: the DDP ranks this machine starts (``trainer.devices``; ranks started by
  SLURM's srun have cores of their own) times the jobs a parallel sweep launcher runs at once (``n_jobs``),
  at least 1.

A number (``threads=4``) is used as it is. The count goes to ``torch.set_num_threads`` and, where torch still allows
it, ``torch.set_num_interop_threads``, and into ``OMP_NUM_THREADS`` so that processes the run starts (DDP ranks)
inherit it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return os.cpu_count() or 1


def local_processes(trainer: Mapping[str, Any], launcher: Mapping[str, Any] | None, env: Mapping[str, str]) -> int:
    """Processes of this run (and of its parallel sweep siblings) that share this machine's cores."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, list | tuple):
        ranks = len(devices)
    elif str(devices).lstrip("-").isdigit() and int(devices) > 0:
        ranks = int(devices)
    elif str(trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        ranks = torch.cuda.device_count()  # devices: auto / -1 on a GPU machine: one rank per GPU
    else:
        ranks = 1
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        ranks = 1  # srun started each rank with its own cores (cpus_per_task): they share nothing
    jobs = (launcher or {}).get("n_jobs") or 1
    return max(1, ranks) * max(1, int(jobs))


def thread_count(setting: int | str, *, cores: int, processes: int, env: Mapping[str, str]) -> int:
    """Intra-op threads for ``threads=<setting>`` (``auto`` or a positive number); see the module docstring."""
    if str(setting) != "auto":
        if not str(setting).isdigit() or int(setting) < 1:
            raise ValueError(f"threads must be `auto` or a positive number of threads, got {setting!r}")
        return int(setting)
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"])
    return max(1, cores // max(1, processes))


def apply_thread_policy(
    setting: int | str, trainer: Mapping[str, Any], launcher: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Set torch's thread counts for this process; returns what run.json records."""
    cores, processes = available_cores(), local_processes(trainer, launcher, os.environ)
    threads = thread_count(setting, cores=cores, processes=processes, env=os.environ)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only allowed once, before any inter-op work: a process that ran torch before keeps its own
        log.debug("torch's inter-op threads were already fixed at %d", torch.get_num_interop_threads())
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the DDP ranks Lightning starts
    log.info("threads: %d per process (threads=%s; %d cores available, %d processes)", threads, setting, cores,
             processes)  # fmt: skip
    return {"setting": str(setting), "threads": threads, "cores": cores, "processes": processes}
