"""Reliability battery: feed mmfw bad configs, bad data and faults the way a user would, and grade each answer.

    python bench/reliability.py                 # every case, in parallel (--jobs 2)
    python bench/reliability.py -k manifest -v  # the cases whose name matches a regex; -v prints bad outputs
    python bench/reliability.py --list          # the cases and what each expects

Each case runs the console scripts (``mmfw-train``, ``mmfw-eval``, ``mmfw-compare``, from the venv of the Python that
runs this file) in subprocesses, on tiny real data in a temporary folder, and grades what comes back:

    clear     a non-zero exit and a message that names the key / file / row / column (the case's regexes all match
              what the user sees: the output without traceback source lines and without Hydra's echo of the overrides)
    correct   the behaviour the case expects, checked (e.g. the run completed and its checkpoint / metrics / records
              are right)
    skipped   the case cannot run here (e.g. no tmpfs for the disk-full case); the reason is printed
    SILENT    a wrong result, or success where an error was due, without a word
    UNCLEAR   an error that does not say what is wrong or where
    HANG      a command did not end within its time limit (it is killed with its process group)
    FAILED    the run was expected to work and failed
    BROKEN    the case itself crashed (a bug in this battery, or a precondition such as the baseline run failed)

The exit status is 1 when any case is SILENT, UNCLEAR, HANG, FAILED or BROKEN. Cases named after a point of issue 8
carry that point (``8.1`` ... ``8.10``); the others are marked ``extra``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The same small AV-digits construction as tests/conftest.py TINY_AVDIGITS (tests/test_reliability_battery.py checks).
TINY = ["datamodule.train_size=40", "datamodule.val_size=20", "datamodule.test_size=20", "datamodule.batch_size=8"]
FAST = [*TINY, "trainer=cpu", "trainer.max_epochs=1", "logger=csv"]
GOOD = ("clear", "correct", "skipped")
BAD = ("SILENT", "UNCLEAR", "HANG", "FAILED", "BROKEN")


# ---------------------------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Verdict:
    kind: str  # one of GOOD + BAD
    detail: str = ""


def clear(detail: str) -> Verdict:
    return Verdict("clear", detail)


def correct(detail: str) -> Verdict:
    return Verdict("correct", detail)


def silent(detail: str) -> Verdict:
    return Verdict("SILENT", detail)


def unclear(detail: str) -> Verdict:
    return Verdict("UNCLEAR", detail)


def skipped(detail: str) -> Verdict:
    return Verdict("skipped", detail)


class Broken(Exception):
    """A precondition of the case failed (e.g. the baseline run): the case cannot judge anything."""


@dataclass
class Result:
    """One finished (or killed) command."""

    command: list[str]
    returncode: int | None  # None: killed after its time limit
    output: str  # stdout and stderr, interleaved
    seconds: float

    @property
    def hung(self) -> bool:
        return self.returncode is None

    @property
    def said(self) -> str:
        return what_was_said(self.output)

    def error_line(self) -> str:
        return error_line(self.said)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_OVERRIDES_ECHO = re.compile(r"^Error executing job with overrides: \[.*\]$")


def what_was_said(output: str) -> str:
    """The output without colour codes, traceback frames (their source lines quote the code, not the message) and
    Hydra's echo of the command-line overrides (which would "name" every key the user typed)."""
    kept, in_traceback = [], False
    for line in _ANSI.sub("", output).splitlines():
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if in_traceback:
            if line.startswith((" ", "\t")) or not line.strip():
                continue
            in_traceback = False
        if not _OVERRIDES_ECHO.match(line.strip()):
            kept.append(line)
    return "\n".join(kept)


def error_line(said: str) -> str:
    """The most telling line: the last exception line (``XError: ...`` or Hydra's ``XError('...')``), else the last
    line that is not one of Hydra's details (indented lines, ``full_key:``, ``object_type=``, the HYDRA_FULL_ERROR
    hint)."""
    details = ("Set the environment variable HYDRA_FULL_ERROR", "full_key:", "object_type=", " ", "\t")
    lines = [line.rstrip() for line in said.splitlines() if line.strip() and not line.startswith(details)]
    for pattern in (r"^[\w.]*(Error|Exception|Exit|Interrupt)\w*[:(]", r"could not|cannot|missing|not found|no such"):
        for line in reversed(lines):
            if re.search(pattern, line, re.IGNORECASE):
                return line[:300]
    return lines[-1][:300] if lines else "(no output)"


def expect_error(result: Result, *needles: str) -> Verdict:
    """``clear`` when the command failed and every regex in ``needles`` is found in what it said."""
    if result.hung:
        return Verdict("HANG", f"no answer after {result.seconds:.0f} s")
    if result.returncode == 0:
        return silent("exit status 0, no error")
    missing = [n for n in needles if not re.search(n, result.said, re.IGNORECASE | re.DOTALL)]
    if missing:
        return unclear(f"{result.error_line()}  [does not say: {' / '.join(missing)}]")
    return clear(result.error_line())


def failed_run(result: Result) -> Verdict | None:
    """HANG or FAILED for a command that should have worked; None when it exited with status 0."""
    if result.hung:
        return Verdict("HANG", f"no answer after {result.seconds:.0f} s")
    if result.returncode != 0:
        return Verdict("FAILED", f"exit {result.returncode}: {result.error_line()}")
    return None


# ---------------------------------------------------------------------------------------------- workspace
class Battery:
    """What the cases share: the temporary root, the processed-data cache and one baseline training run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"
        self._lock = threading.Lock()
        self._baseline: Path | Exception | None = None

    def baseline(self) -> Path:
        """A completed tiny run (1 epoch, CSV logger), trained once, from a folder outside the repository."""
        with self._lock:
            if self._baseline is None:
                ws = Workspace(self, "_baseline")
                result = ws.train(run_dir=ws.root / "run")
                ok = result.returncode == 0 and (ws.root / "run" / "run.json").is_file()
                self._baseline = ws.root / "run" if ok else Broken(f"the baseline run failed: {result.error_line()}")
            if isinstance(self._baseline, Exception):
                raise self._baseline
            return self._baseline


class Workspace:
    """One case's folder (``MMFW_ROOT``, the working directory of its commands) and its commands."""

    def __init__(self, battery: Battery, name: str) -> None:
        self.battery = battery
        self.root = battery.root / name
        self.root.mkdir(parents=True)
        self._outputs = self.root / ".outputs"
        self._outputs.mkdir()
        self.results: list[Result] = []

    def env(self, **changes: str | None) -> dict[str, str]:
        """The user's environment, offline, with logs under this case's folder and the shared processed-data cache."""
        env = dict(os.environ)
        for key, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("HF_HUB_OFFLINE", "1"),
                           ("TRANSFORMERS_OFFLINE", "1"), ("OMP_NUM_THREADS", "1")):  # fmt: skip
            env.setdefault(key, value)
        env.pop("HYDRA_FULL_ERROR", None)  # users see Hydra's short error
        env.update(MMFW_ROOT=str(self.root), MMFW_CACHE_DIR=str(self.battery.cache))
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(self, script: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
        """Start ``<venv>/bin/<script> args`` in its own process group; output goes to a file."""
        return self.start_command([script_path(script), *map(str, args)], cwd=cwd, env=env)

    def start_command(self, command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None):
        log = self._outputs / f"{len(list(self._outputs.iterdir())):02d}-{Path(command[0]).name}.txt"
        handle = open(log, "w")
        proc = subprocess.Popen(command, cwd=cwd or self.root, env=env or self.env(), stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        proc.log, proc.handle, proc.command, proc.started = log, handle, command, time.monotonic()
        return proc

    def finish(self, proc, timeout: float) -> Result:  # noqa: ANN001
        """Wait for ``proc``; past ``timeout`` kill its whole process group (DDP ranks included)."""
        try:
            returncode = proc.wait(timeout=max(0.0, timeout - (time.monotonic() - proc.started)))
        except subprocess.TimeoutExpired:
            kill_group(proc)
            returncode = None
        proc.handle.close()
        result = Result(proc.command, returncode, proc.log.read_text(errors="replace"), time.monotonic() - proc.started)
        self.results.append(result)
        return result

    def run(self, script: str, *args: str, timeout: float = 240, **kwargs) -> Result:
        return self.finish(self.start(script, *args, **kwargs), timeout)

    def train(self, *args: str, run_dir: Path | None = None, fast: bool = True, **kwargs) -> Result:
        """``mmfw-train`` on tiny AV-digits for one epoch (``fast``) plus ``args``."""
        extra = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
        return self.run("mmfw-train", *(FAST if fast else []), *args, *extra, **kwargs)

    def copy_of_baseline(self, name: str = "run") -> Path:
        """A private copy of the baseline run folder (cases may break it)."""
        target = self.root / name
        shutil.copytree(self.battery.baseline(), target, symlinks=True)
        return target

    def runs(self) -> list[Path]:
        """Run folders created under this case's ``logs/train/runs``."""
        folder = self.root / "logs" / "train" / "runs"
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def script_path(script: str) -> str:
    path = BIN / script
    if path.exists():
        return str(path)
    found = shutil.which(script)
    if found is None:
        raise Broken(f"{script} is not installed next to {sys.executable} nor on PATH: pip install -e .")
    return found


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def wait_for(path_glob: Path, proc: subprocess.Popen, timeout: float) -> Path:
    """The first file matching ``path_glob`` (a path, wildcards allowed in its name), while ``proc`` still runs."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(path_glob.parent.glob(path_glob.name)) if path_glob.parent.is_dir() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            raise Broken(f"the run ended (exit {proc.returncode}) before {path_glob} existed: {tail(proc.log)}")
        if time.monotonic() > deadline:
            kill_group(proc)
            raise Broken(f"no {path_glob} after {timeout:.0f} s")
        time.sleep(0.02)


def tail(path: Path, n: int = 400) -> str:
    return error_line(what_was_said(path.read_text(errors="replace")))[-n:]


def run_json(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` of every row that has ``name``. Rows without an epoch (the learning-rate monitor's, logged
    as an epoch starts) take the epoch of the next row that has one."""
    out, pending = [], []
    for row in rows:
        if row.get(name) not in (None, ""):
            pending.append(float(row[name]))
        if row.get("epoch"):
            out += [(int(row["epoch"]), value) for value in pending]
            pending = []
    return out


def epochs_trained(run_dir: Path) -> int:
    """How many epochs were validated, by metrics.csv."""
    return 1 + max((epoch for epoch, _ in column(csv_rows(run_dir), "val/acc")), default=-1)


# ---------------------------------------------------------------------------------------------- tiny manifests
# Distinctive column names: a message that names one of them is about it, not about something else.
NUMERIC, CATEGORICAL, TARGET = "height_cm", "fur_colour", "species"
MODALITY_SPEC = {
    "meta": (f"{{kind:tabular,numeric:[{NUMERIC}],categorical:[{CATEGORICAL}]}}", "+encoder/tabular@encoder.meta=mlp"),
    "image": ("{kind:image,column:img}", None),  # encoder.image (lenet) and encoder.audio (gru) are the defaults
    "audio": ("{kind:audio,column:wav}", None),
    "caption": ("{kind:text,column:caption}", "+encoder/text@encoder.caption=transformer"),
}
# The exported-AV-digits decoding settings (conf/experiment/manifest_digits.yaml): 28x28 grey images, 8 kHz audio.
MEDIA_SETTINGS = ["datamodule.image_mode=L", "datamodule.image_size=28", "datamodule.sample_rate=8000",
                  "datamodule.n_mels=40", "datamodule.n_fft=256", "datamodule.hop_length=128",
                  "datamodule.num_frames=64", "datamodule.batch_size=8"]  # fmt: skip
SPLITS = ["train"] * 16 + ["val"] * 4 + ["test"] * 4  # rows 1-16, 17-20, 21-24 (1-based data rows)


def manifest_rows(folder: Path, media: Sequence[str] = ()) -> list[dict]:
    """Rows with a numeric, a categorical, a text and a 3-class target column, and a split column; ``media`` adds
    an ``img`` (28x28 grey PNG) and/or a ``wav`` (0.3 s, 8 kHz) file per row under ``folder/media``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    species = ["cat", "dog", "owl"]
    rows = []
    for i in range(len(SPLITS)):
        row = {NUMERIC: f"{150 + 3 * i + rng.normal():.1f}", CATEGORICAL: ["red", "grey", "tabby"][i % 3],
               "caption": f"a {species[i % 3]} number {i}", TARGET: species[i % 3], "split": SPLITS[i]}  # fmt: skip
        if "image" in media:
            write_png(folder / "media" / f"img{i + 1}.png", seed=i)
            row["img"] = f"media/img{i + 1}.png"
        if "audio" in media:
            write_wav(folder / "media" / f"rec{i + 1}.wav", seed=i)
            row["wav"] = f"media/rec{i + 1}.wav"
        rows.append(row)
    return rows


def write_png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)).save(path)


def write_wav(path: Path, seed: int, seconds: float = 0.3) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * seconds)) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * (300 + 40 * seed) * t)).astype(np.float32), 8000, subtype="PCM_16")


def write_manifest(folder: Path, rows: list[dict], fmt: str = "csv") -> Path:
    import pandas as pd

    path = folder / f"manifest.{fmt}"
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        raise ValueError(fmt)
    return path


def manifest_args(path: Path, modalities: Sequence[str] = ("meta",), *extra: str) -> list[str]:
    """``mmfw-train`` overrides that train on the manifest at ``path`` with the given modalities."""
    columns = [f"+datamodule.columns.{m}={MODALITY_SPEC[m][0]}" for m in modalities]  # as the README writes them
    encoders = [MODALITY_SPEC[m][1] for m in modalities if MODALITY_SPEC[m][1]]
    return ["datamodule=manifest", f"datamodule.manifest={path}", f"datamodule.target={TARGET}", *columns,
            f"modalities=[{','.join(modalities)}]", *MEDIA_SETTINGS, *encoders, "trainer=cpu", "trainer.max_epochs=1",
            "logger=csv", *extra]  # fmt: skip


def train_on_manifest(ws: Workspace, rows: list[dict], modalities: Sequence[str] = ("meta",), *extra: str,
                      fmt: str = "csv", timeout: float = 240) -> Result:  # fmt: skip
    path = write_manifest(ws.root / "data", rows, fmt)
    return ws.run("mmfw-train", *manifest_args(path, modalities, *extra), timeout=timeout)


# ============================================================================================== cases: issue 8
def ddp_default_callbacks(ws: Workspace) -> Verdict:
    """trainer=ddp_cpu with the shipped callbacks (rich progress bar) and loggers completes: one run folder, and its
    test metrics equal a single-process mmfw-eval of the same checkpoint."""
    result = ws.train(*TINY, "trainer=ddp_cpu", "trainer.max_epochs=2", fast=False, timeout=360)
    if bad := failed_run(result):
        return bad
    runs = ws.runs()
    if len(runs) != 1:
        return silent(f"{len(runs)} run folders for one run: {[r.name for r in runs]}")
    record = run_json(runs[0])
    if record.get("status") != "completed" or not record.get("test_metrics"):
        return silent(f"run.json status {record.get('status')!r}, test_metrics {record.get('test_metrics')}")
    evaluated = ws.run("mmfw-eval", f"run={runs[0]}", "accelerator=cpu")
    if bad := failed_run(evaluated):
        return bad
    single = json.loads((runs[0] / "eval_metrics.json").read_text())["metrics"]
    ddp = record["test_metrics"]
    differ = {k: (ddp[k], single[k]) for k in ddp.keys() & single.keys() if not math.isclose(ddp[k], single[k],
                                                                                          abs_tol=1e-5)}  # fmt: skip
    if differ or not ddp.keys() & single.keys():
        return silent(f"DDP test metrics differ from a single-process evaluation: {differ}")
    return correct(f"completed in {result.seconds:.0f} s; {len(ddp)} test metrics equal mmfw-eval's")


def _evil_checkpoint(source: Path, target: Path, marker: Path) -> None:
    """``source`` with an extra object whose unpickling runs a shell command that creates ``marker``."""
    import torch

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return os.system, (f"touch {shlex.quote(str(marker))}",)

    state = torch.load(source, map_location="cpu", weights_only=False)  # our own file
    state["payload"] = Payload()
    torch.save(state, target)


def pickle_checkpoint_eval(ws: Workspace) -> Verdict:
    """mmfw-eval ckpt=<crafted .ckpt whose pickle runs a command>: refused (weights_only), the command never runs."""
    run = ws.copy_of_baseline()
    marker = ws.root / "PWNED"
    evil = run / "checkpoints" / "crafted.ckpt"
    _evil_checkpoint(run / "checkpoints" / "last.ckpt", evil, marker)
    result = ws.run("mmfw-eval", f"run={run}", f"ckpt={evil}")
    if marker.exists():
        return silent("the code pickled into the checkpoint ran")
    return expect_error(result, r"crafted\.ckpt", r"weights_only|unsafe|untrusted|trust|not allowed|allow|refus")


def pickle_checkpoint_resume(ws: Workspace) -> Verdict:
    """resume=<run> whose last.ckpt was crafted to run a command: refused, nothing runs, the run stays completed."""
    run = ws.copy_of_baseline()
    marker = ws.root / "PWNED"
    _evil_checkpoint(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt", marker)
    result = ws.run("mmfw-train", f"resume={run}")
    if marker.exists():
        return silent("the code pickled into last.ckpt ran")
    if (status := run_json(run).get("status")) != "completed":
        return silent(f"the refused resume changed the run's status to {status!r}")
    return expect_error(result, r"last\.ckpt", r"weights_only|unsafe|untrusted|trust|not allowed|allow|refus")


def new_run_into_finished_run_folder(ws: Workspace) -> Verdict:
    """A new run with hydra.run.dir=<finished run> is refused, naming resume=; the folder is left as it was."""
    run = ws.copy_of_baseline()
    before = {p: (run / p).read_bytes() for p in (".hydra/config.yaml", "run.json", "test_metrics.json")}
    result = ws.train("fusion=late", run_dir=run)
    changed = [p for p, data in before.items() if not (run / p).is_file() or (run / p).read_bytes() != data]
    if changed and result.returncode != 0:
        return silent(f"refused, but after overwriting {changed}")
    if changed:
        return silent(f"trained into the finished run's folder, replacing {changed}")
    return expect_error(result, r"resume=", re.escape(run.name))


def two_new_runs_same_folder(ws: Workspace) -> Verdict:
    """Two new runs started at once with the same hydra.run.dir: one trains, the other is refused naming resume=."""
    run = ws.root / "shared_run"
    procs = [ws.start("mmfw-train", *FAST, f"hydra.run.dir={run}") for _ in range(2)]
    results = [ws.finish(p, timeout=300) for p in procs]
    if any(r.hung for r in results):
        return Verdict("HANG", "a run did not end")
    ok = [r for r in results if r.returncode == 0]
    if len(ok) == 2:
        return silent("both runs trained into the same folder")
    if not ok:
        return Verdict("FAILED", f"neither run completed: {results[0].error_line()} | {results[1].error_line()}")
    if run_json(run).get("status") != "completed":
        return silent(f"one run completed but run.json says {run_json(run).get('status')!r}")
    refused = next(r for r in results if r.returncode != 0)
    return expect_error(refused, r"resume=", re.escape(run.name))


def monitor_val_loss_mode(ws: Workspace) -> Verdict:
    """monitor.metric=val/loss alone: mode becomes min, the best checkpoint is the lowest-loss epoch."""
    result = ws.train("monitor.metric=val/loss", "trainer.max_epochs=3", "callbacks.early_stopping=null")
    if bad := failed_run(result):
        return bad
    (run,) = ws.runs()
    monitor = run_json(run).get("monitor", {})
    losses = column(csv_rows(run), "val/loss")
    best_epoch = min(losses, key=lambda e: e[1])[0]
    best_file = Path(run_json(run).get("best_checkpoint") or "?").name
    if monitor.get("mode") != "min" or best_file != f"epoch_{best_epoch:03d}.ckpt":
        return silent(f"mode {monitor.get('mode')!r}, best checkpoint {best_file}, val/loss by epoch {losses}")
    return correct(f"mode min, best = {best_file} (val/loss {min(v for _, v in losses):.4f})")


def manifest_duplicate_columns(ws: Workspace) -> Verdict:
    """A CSV whose header has the same column twice: an error naming the column (pandas would rename one)."""
    rows = manifest_rows(ws.root / "data")
    path = ws.root / "data" / "manifest.csv"
    header = [NUMERIC, CATEGORICAL, NUMERIC, TARGET, "split"]
    lines = [",".join(header)] + [",".join([r[NUMERIC], r[CATEGORICAL], "0", r[TARGET], r["split"]]) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    result = ws.run("mmfw-train", *manifest_args(path))
    return expect_error(result, NUMERIC, r"duplicat|twice|more than once|repeated", r"manifest\.csv")


def manifest_int_and_float_labels(ws: Workspace) -> Verdict:
    """Labels 2 and "2.0" in one target column are one class (or a clear error), never two classes."""
    rows = manifest_rows(ws.root / "data")
    for i, row in enumerate(rows):
        row[TARGET] = ["1", "2", "3"][i % 3]
        if i in (4, 10, 17):  # two training rows and a validation row write label 2 as 2.0
            row[TARGET] = "2.0"
    result = train_on_manifest(ws, rows)
    if result.hung or result.returncode != 0:
        return expect_error(result, r"2\.0", TARGET, r"row \d+")
    import yaml

    (run,) = ws.runs()
    names = [str(n) for n in yaml.safe_load((run / "resolved_config.yaml").read_text())["data"]["class_names"]]
    if len(names) != 3:
        return silent(f"{len(names)} classes {names} from the labels 1, 2, 3 (2 also written 2.0)")
    return correct(f"3 classes {names}")


def manifest_truncated_wav(ws: Workspace) -> Verdict:
    """A WAV cut off mid-data (its header promises more frames): an error naming the file, not shorter audio."""
    rows = manifest_rows(ws.root / "data", media=("audio",))
    wav = ws.root / "data" / "media" / "rec3.wav"
    wav.write_bytes(wav.read_bytes()[: 44 + 1500])
    result = train_on_manifest(ws, rows, ("audio",))
    return expect_error(result, r"rec3\.wav", r"truncat|incomplete|short|corrupt|damaged|cut|expected")


def manifest_parquet_list_in_categorical(ws: Workspace) -> Verdict:
    """A Parquet list in a categorical column: an error naming the column, not a stringified list as a category."""
    rows = manifest_rows(ws.root / "data")
    for row in rows:
        row[CATEGORICAL] = [row[CATEGORICAL], "striped"]
    result = train_on_manifest(ws, rows, fmt="parquet")
    return expect_error(result, CATEGORICAL, r"list|array|sequence", r"manifest\.parquet")


def manifest_symlink_escapes(ws: Workspace) -> Verdict:
    """An image that is a symlink to a file outside the manifest's folder: refused like ../ paths."""
    rows = manifest_rows(ws.root / "data", media=("image",))
    outside = ws.root / "elsewhere" / "secret.png"
    write_png(outside, seed=99)
    link = ws.root / "data" / "media" / "img5.png"
    link.unlink()
    link.symlink_to(outside)
    result = train_on_manifest(ws, rows, ("image",))
    return expect_error(result, r"img5\.png", r"allow_outside_root|outside|leaves|symlink")


def manifest_huge_number(ws: Workspace) -> Verdict:
    """1e308 in a numeric column: an error naming the row and column (not a NaN loss blamed on the learning rate)."""
    rows = manifest_rows(ws.root / "data")
    rows[2][NUMERIC] = "1e308"
    result = train_on_manifest(ws, rows)
    return expect_error(result, r"row 3\b", NUMERIC)


def manifest_latin1_jsonl(ws: Workspace) -> Verdict:
    """A JSONL manifest in latin-1: an error naming the file, the line and the encoding."""
    rows = manifest_rows(ws.root / "data")
    rows[4][CATEGORICAL] = "café-au-lait"
    path = ws.root / "data" / "manifest.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("latin-1"))
    result = ws.run("mmfw-train", *manifest_args(path))
    return expect_error(result, r"manifest\.jsonl", r"(row|line) 5\b", r"utf-?8|encod")


def bpe_on_a_1mb_text_cell(ws: Workspace) -> Verdict:
    """text_tokenizer=bpe with one 1 MB text cell (a DNA sequence: one long word) finishes in under 2 minutes, or
    stops with an error naming the row and column."""
    rows = manifest_rows(ws.root / "data")
    rows[0]["caption"] = "".join(np.random.default_rng(0).choice(list("ACGT"), 1_000_000))
    result = train_on_manifest(ws, rows, ("caption",), "datamodule.text_tokenizer=bpe", timeout=120)
    if result.hung or result.returncode != 0:
        return expect_error(result, "caption", r"row 1\b")
    return correct(f"finished in {result.seconds:.0f} s")


def gpu_trainer_without_gpu(ws: Workspace) -> Verdict:
    """trainer=gpu on a machine without a (visible) GPU: an error naming trainer=gpu and the CPU alternative."""
    result = ws.train(*TINY, "trainer=gpu", "logger=csv", fast=False, env=ws.env(CUDA_VISIBLE_DEVICES=""))
    return expect_error(result, r"trainer[=.](gpu|accelerator)", r"trainer=cpu|accelerator=(cpu|auto)")


def unused_plus_override(ws: Workspace) -> Verdict:
    """+learning_rate=0.1 (a key nothing reads): refused or warned about by name, not silently ignored."""
    result = ws.train("+learning_rate=0.1")
    words = r"(unused|not used|ignored|no effect|unknown|not read|never read|nothing reads|unrecogni[sz]ed|no such)"
    if result.hung or result.returncode != 0:
        return expect_error(result, r"learning_rate", words)
    if re.search(rf"learning_rate.*{words}|{words}.*learning_rate", result.said, re.IGNORECASE):
        return correct("trained, with a warning that names +learning_rate")
    return silent("trained; +learning_rate=0.1 ignored without a word")


def sigint_in_multirun(ws: Workspace) -> Verdict:
    """Ctrl-C during job 0 of a 3-job sweep: sweep_summary.json is written and lists the 2 jobs that never started."""
    sweep = ws.root / "sweep"
    proc = ws.start("mmfw-train", "-m", *TINY, "trainer=cpu", "logger=csv", "trainer.max_epochs=500",
                    "callbacks.early_stopping=null", "seed=11,12,13", f"hydra.sweep.dir={sweep}")  # fmt: skip
    wait_for(sweep / "0" / "checkpoints" / "last.ckpt", proc, timeout=240)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends: the whole foreground group
    result = ws.finish(proc, timeout=time.monotonic() - proc.started + 120)
    if result.hung:
        return Verdict("HANG", "the sweep did not stop within 120 s of Ctrl-C")
    summary = sweep / "sweep_summary.json"
    if not summary.is_file():
        return silent(f"exit {result.returncode}, no sweep_summary.json")
    text = summary.read_text()
    missing = [s for s in ("seed=12", "seed=13") if s not in text]
    if missing:
        return silent(f"sweep_summary.json does not list the unstarted jobs {missing}")
    if result.returncode == 0:
        return silent("an interrupted sweep exited with status 0")
    return correct(f"exit {result.returncode}; summary lists the unstarted jobs seed=12, seed=13")


def disk_full(ws: Workspace) -> Verdict:
    """The disk fills up while the run saves its checkpoint: the run fails and run.json says so (not `running`)."""
    mount = ws.root / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0:
        return skipped("needs root to mount a tiny tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        return skipped(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        run = mount / "run"  # config and run.json fit in 400 KB, a 1 MB checkpoint does not
        result = ws.train(run_dir=run)
        if result.hung:
            return Verdict("HANG", "no answer with a full disk")
        if result.returncode == 0:
            raise Broken("the run completed: the tmpfs was not small enough to fill up")
        status = run_json(run).get("status")
        if status != "failed":
            return silent(f"exit {result.returncode}, but run.json status is {status!r}")
        return expect_error(result, r"No space left|disk.*full|ENOSPC")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def git_commit_outside_repo(ws: Workspace) -> Verdict:
    """mmfw-train started outside the repository still records the code's git commit in run.json."""
    run = ws.battery.baseline()  # trained with its own temporary folder as the working directory
    probe = subprocess.run([sys.executable, "-c", "import mmfw, os; print(os.path.dirname(mmfw.__file__))"],
                           capture_output=True, text=True, env=ws.env(), cwd=ws.root)  # fmt: skip
    package = Path(probe.stdout.strip())
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return skipped(f"mmfw is not imported from a git checkout ({package})")
    recorded = (run_json(run).get("git") or {}).get("commit")
    if recorded != head.stdout.strip():
        return silent(f"run.json git.commit is {recorded!r}, the code is at {head.stdout.strip()[:12]}")
    return correct(f"git.commit {recorded[:12]}")


def resume_typo(ws: Workspace) -> Verdict:
    """resume=<a folder that does not exist>: an error naming resume= and the path; no folder is created."""
    typo = ws.root / "logs" / "train" / "runs" / "2026-01-01_00-00-00_tyop"
    verdict = expect_error(ws.run("mmfw-train", f"resume={typo}"), r"resume=", re.escape(typo.name))
    if typo.exists() and verdict.kind == "clear":
        return silent(f"created the mistyped folder {typo.name} (and said: {verdict.detail})")
    if typo.exists():
        return Verdict(verdict.kind, f"{verdict.detail}; created the mistyped folder")
    return verdict


def eval_best_checkpoint_deleted(ws: Workspace) -> Verdict:
    """mmfw-eval when the recorded best checkpoint is gone: it says it falls back to last.ckpt (or refuses)."""
    run = ws.copy_of_baseline()
    best = run / run_json(run)["best_checkpoint"]
    best.unlink()
    result = ws.run("mmfw-eval", f"run={run}")
    if result.hung or result.returncode != 0:
        return expect_error(result, re.escape(best.name))
    if re.search(re.escape(best.name), result.said) and "last.ckpt" in result.said:
        return correct(f"evaluated last.ckpt and said that {best.name} is missing")
    return silent(f"evaluated last.ckpt without saying that {best.name} is missing")


def eval_leaves_cwd_alone(ws: Workspace) -> Verdict:
    """mmfw-eval started from another folder (no MMFW_ROOT / MMFW_CACHE_DIR) writes nothing there (no data/cache)."""
    run = ws.copy_of_baseline()
    elsewhere = ws.root / "elsewhere"
    elsewhere.mkdir()
    result = ws.run("mmfw-eval", f"run={run}", cwd=elsewhere, env=ws.env(MMFW_ROOT=None, MMFW_CACHE_DIR=None))
    if bad := failed_run(result):
        return bad
    written = sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*"))
    if written:
        return silent(f"wrote into the working directory: {written[:4]}")
    return correct("nothing written into the working directory")


def wandb_offline_resume(ws: Workspace) -> Verdict:
    """A resumed offline W&B run gets its own run id (the first part survives `wandb sync`), with resumed_from."""
    run = ws.root / "run"
    first = ws.train(*TINY, "trainer=cpu", "trainer.max_epochs=1", fast=False, run_dir=run)  # W&B offline + CSV
    if bad := failed_run(first):
        return bad
    second = ws.run("mmfw-train", f"resume={run}")
    if bad := failed_run(second):
        return bad
    parts = sorted((run / "wandb").glob("offline-run-*"))  # offline-run-<YYYYmmdd_HHMMSS>-<id>: in time order
    ids = [p.name.rsplit("-", 1)[-1] for p in parts]
    if len(set(ids)) < 2:
        return silent(f"the resumed part reuses W&B run id(s) {ids}: wandb sync overwrites the first part")
    later = b"".join(f.read_bytes() for f in parts[-1].rglob("*") if f.is_file())
    if b"resumed_from" not in later or ids[0].encode() not in later:
        return silent(f"second W&B run {ids[-1]} does not record resumed_from={ids[0]}")
    return correct(f"W&B runs {ids}, the second with resumed_from")


def resume_with_changed_values(ws: Workspace) -> Verdict:
    """resume with trainer.max_epochs=4 model.optimizer.lr=0.1: the new lr and horizon take effect, or a clear
    refusal that names them."""
    run = ws.root / "run"
    first = ws.train("trainer.max_epochs=2", "callbacks.early_stopping=null", run_dir=run)
    if bad := failed_run(first):
        return bad
    result = ws.run("mmfw-train", f"resume={run}", "trainer.max_epochs=4", "model.optimizer.lr=0.1")
    if result.hung or result.returncode != 0:
        return expect_error(result, r"model\.optimizer\.lr|trainer\.max_epochs")
    epochs = epochs_trained(run)
    lrs = {epoch: round(lr, 6) for epoch, lr in column(csv_rows(run), "lr-AdamW")}
    resumed = [lrs.get(e) for e in (2, 3)]
    # The old rate was 1e-3 with a cosine horizon of 2 epochs: after the resume the rate must come from 0.1 and keep
    # decreasing over the new horizon of 4 (the bug: 0.0 at epoch 2, then climbing back to 5e-4).
    takes_effect = all(lr is not None and 0.002 < lr <= 0.1 for lr in resumed) and resumed[0] >= resumed[1]
    if epochs != 4 or not takes_effect:
        return silent(f"{epochs} epochs trained, lr by epoch {lrs}: the new lr / horizon did not take effect")
    return correct(f"4 epochs, lr by epoch {lrs}")


def tests_fail_without_data_in_ci(ws: Workspace) -> Verdict:
    """MMFW_REQUIRE_DATA=1 (.ci/run), no data, no network: a test needing AV-digits fails and says how to provide it."""
    return _pytest_without_data(ws, require=True)


def tests_skip_offline_with_reason(ws: Workspace) -> Verdict:
    """No data, no network, no MMFW_REQUIRE_DATA: the test is skipped, and the skip says why."""
    return _pytest_without_data(ws, require=False)


def _pytest_without_data(ws: Workspace, *, require: bool) -> Verdict:
    fetched = REPO / "data" / "avdigits" / "raw" / "mnist" / "mnist.npz"
    if fetched.is_file():
        return skipped(f"{fetched.parent.parent} holds a fetched copy: the tests would use it")
    nowhere = "http://127.0.0.1:9/"  # the discard port: the download's connection is refused, as when offline
    env = ws.env(MMFW_AVDIGITS_RAW=str(ws.root / "no_data"), MMFW_REQUIRE_DATA="1" if require else None,
                 MMFW_AVDIGITS_FSDD_URL=nowhere + "fsdd.zip", MMFW_AVDIGITS_MNIST_URL=nowhere + "mnist.npz",
                 MMFW_CACHE_DIR=str(ws.root / "cache"))  # fmt: skip
    test = "tests/data/test_avdigits.py::test_real_data_digests_verified_once"
    command = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-rs", "-q", test]
    result = ws.finish(ws.start_command(command, cwd=REPO, env=env), timeout=240)
    if require:
        verdict = expect_error(result, r"MMFW_AVDIGITS_RAW=", re.escape(str(ws.root / "no_data")))
        reason = re.search(r"^.*could not be downloaded.*$", result.said, re.MULTILINE)
        return Verdict(verdict.kind, reason.group(0).strip()[:300]) if verdict.kind == "clear" and reason else verdict
    if result.returncode != 0:
        return Verdict("FAILED", f"exit {result.returncode}: {result.error_line()}")
    if not re.search(r"SKIPPED.*no_data.*could not be downloaded", result.said, re.S):
        return silent(f"passed without running the test or saying why: {result.error_line()}")
    return correct("skipped with the reason (no data, download refused)")


# ============================================================================================== cases: more
# mmfw-train with one bad value on the command line: (case, what it expects, overrides, patterns the error must
# match, each one).
TRAIN_ERRORS = [
    ("unknown_group_option", "fusion=nope: an error naming the group and the options there are.",
     ["fusion=nope"], [r"fusion/nope|fusion.*nope", r"concat"]),
    ("misspelled_key", "trainer.max_epoch=1 (no such key): an error naming the key (and how to add one with +).",
     ["trainer.max_epoch=1"], [r"max_epoch\b"]),
    ("wrong_type_value", "trainer.max_epochs=abc: an error naming trainer.max_epochs and the bad value.",
     ["trainer.max_epochs=abc"], [r"max_epochs", r"abc"]),
    ("negative_batch_size", "datamodule.batch_size=-4: an error naming batch_size and the value.",
     ["datamodule.batch_size=-4"], [r"batch_size", r"-4"]),
    ("empty_modalities", "modalities=[]: an error naming `modalities`.",
     ["modalities=[]"], [r"modalities"]),
    ("modality_without_encoder",
     "modalities=[image,text] with no encoder.text: an error naming the modality and how to add an encoder.",
     ["modalities=[image,text]"], [r"'text'|\btext\b", r"encoder"]),
    ("lr_too_large",
     "model.optimizer.lr=1e30: the loss becomes NaN; an error that says so and names the learning rate.",
     ["model.optimizer.lr=1e30"], [r"nan|non-?finite|inf", r"model\.optimizer\.lr"]),
    ("fp16_on_cpu", "trainer.precision=16-mixed on the CPU: an error naming the precision and what works on a CPU.",
     ["trainer.precision=16-mixed"], [r"16-mixed", r"bf16-mixed|32-true|trainer=gpu"]),
]  # fmt: skip


def train_error(overrides: list[str], patterns: list[str]) -> Callable[[Workspace], Verdict]:
    """The check of a :data:`TRAIN_ERRORS` row: ``mmfw-train <overrides>`` fails with an error matching ``patterns``."""
    return lambda ws: expect_error(ws.train(*overrides), *patterns)


def raw_data_missing_no_download(ws: Workspace) -> Verdict:
    """datamodule.raw_dir=<empty> datamodule.download=false: an error naming the folder and how to provide it."""
    result = ws.train(f"datamodule.raw_dir={ws.root / 'no_raw'}", "datamodule.download=false")
    return expect_error(result, r"no_raw", r"MMFW_AVDIGITS_RAW|datamodule\.raw_dir")


def bilinear_three_modalities(ws: Workspace) -> Verdict:
    """fusion=bilinear with three modalities: an error naming fusion=bilinear and the two-modality limit."""
    rows = manifest_rows(ws.root / "data", media=("image", "audio"))
    result = train_on_manifest(ws, rows, ("image", "audio", "meta"), "fusion=bilinear")
    return expect_error(result, r"bilinear", r"two modalities|2 modalities|exactly two")


def text_longer_than_encoder(ws: Workspace) -> Verdict:
    """datamodule.max_text_len=600 with a text encoder of max_len 512: an error naming both settings."""
    rows = manifest_rows(ws.root / "data")
    result = train_on_manifest(ws, rows, ("caption",), "datamodule.max_text_len=600")
    return expect_error(result, r"max_len", r"max_text_len|600")


def manifest_missing_file(ws: Workspace) -> Verdict:
    """datamodule.manifest=<no such file>: an error naming the path and the key."""
    path = ws.root / "nope" / "manifest.csv"
    return expect_error(ws.run("mmfw-train", *manifest_args(path)), r"nope/manifest\.csv", r"datamodule\.manifest")


def manifest_missing_target_column(ws: Workspace) -> Verdict:
    """datamodule.target=specie (typo): an error naming the column and the file's columns."""
    rows = manifest_rows(ws.root / "data")
    result = train_on_manifest(ws, rows, ("meta",), "datamodule.target=specie")
    return expect_error(result, r"specie\b", r"species")


def manifest_empty(ws: Workspace) -> Verdict:
    """A manifest with a header and no rows: an error naming the file."""
    path = ws.root / "data" / "manifest.csv"
    path.parent.mkdir(parents=True)
    path.write_text(f"{NUMERIC},{CATEGORICAL},{TARGET},split\n")
    return expect_error(ws.run("mmfw-train", *manifest_args(path)), r"manifest\.csv", r"no rows|empty|no data")


def manifest_unknown_format(ws: Workspace) -> Verdict:
    """A manifest.xlsx: an error naming the file and the formats that work."""
    path = ws.root / "data" / "manifest.xlsx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    return expect_error(ws.run("mmfw-train", *manifest_args(path)), r"manifest\.xlsx", r"csv|jsonl|parquet")


def manifest_unknown_task(ws: Workspace) -> Verdict:
    """datamodule.task=classification: an error naming the key and the allowed values."""
    rows = manifest_rows(ws.root / "data")
    result = train_on_manifest(ws, rows, ("meta",), "datamodule.task=classification")
    return expect_error(result, r"datamodule\.task", r"multiclass")


def manifest_label_only_in_val(ws: Workspace) -> Verdict:
    """A validation row whose label never occurs in training: an error naming the row and the label."""
    rows = manifest_rows(ws.root / "data")
    rows[17][TARGET] = "axolotl"
    return expect_error(train_on_manifest(ws, rows), r"axolotl", r"row 18\b")


def manifest_bad_split_value(ws: Workspace) -> Verdict:
    """split=training in one row: an error naming the row, the column and the allowed values."""
    rows = manifest_rows(ws.root / "data")
    rows[3]["split"] = "training"
    return expect_error(train_on_manifest(ws, rows), r"row 4\b", r"split", r"'training'|\btraining\b")


def manifest_text_in_numeric_column(ws: Workspace) -> Verdict:
    """'tall' in a numeric column: an error naming the row and the column."""
    rows = manifest_rows(ws.root / "data")
    rows[5][NUMERIC] = "tall"
    return expect_error(train_on_manifest(ws, rows), r"row 6\b", NUMERIC)


def manifest_nan_regression_target(ws: Workspace) -> Verdict:
    """An empty regression target: an error naming the row and the target column."""
    rows = manifest_rows(ws.root / "data")
    for row in rows:
        row["weight_kg"] = row[NUMERIC]
    rows[6]["weight_kg"] = ""
    extra = ["datamodule.target=weight_kg", "datamodule.task=regression", "monitor.metric=val/mse", "monitor.mode=min"]
    return expect_error(train_on_manifest(ws, rows, ("meta",), *extra), r"row 7\b", r"weight_kg")


def manifest_corrupt_png(ws: Workspace) -> Verdict:
    """An image file with garbage bytes: an error naming the file and the row."""
    rows = manifest_rows(ws.root / "data", media=("image",))
    (ws.root / "data" / "media" / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return expect_error(train_on_manifest(ws, rows, ("image",)), r"img2\.png", r"row 2\b")


def manifest_corrupt_wav(ws: Workspace) -> Verdict:
    """A WAV file with garbage bytes: an error naming the file and the row."""
    rows = manifest_rows(ws.root / "data", media=("audio",))
    (ws.root / "data" / "media" / "rec2.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE garbage")
    return expect_error(train_on_manifest(ws, rows, ("audio",)), r"rec2\.wav", r"row 2\b")


def manifest_missing_image(ws: Workspace) -> Verdict:
    """A row whose image file does not exist: an error naming the file, the row and datamodule.missing_file."""
    rows = manifest_rows(ws.root / "data", media=("image",))
    rows[2]["img"] = "media/nope3.png"
    result = train_on_manifest(ws, rows, ("image",))
    return expect_error(result, r"nope3\.png", r"row 3\b", r"missing_file")


def manifest_all_modalities_train(ws: Workspace) -> Verdict:
    """Control: a clean manifest with image, audio, text and tabular columns trains and records test metrics."""
    rows = manifest_rows(ws.root / "data", media=("image", "audio"))
    result = train_on_manifest(ws, rows, ("image", "audio", "caption", "meta"))
    if bad := failed_run(result):
        return bad
    (run,) = ws.runs()
    metrics = run_json(run).get("test_metrics") or {}
    if run_json(run).get("status") != "completed" or not all(math.isfinite(v) for v in metrics.values()) or not metrics:
        return silent(f"status {run_json(run).get('status')!r}, test metrics {metrics}")
    return correct(f"completed, test/acc {metrics.get('test/acc')}")


def baseline_records(ws: Workspace) -> Verdict:
    """Control: a plain tiny run completes; run.json's best score is the best val/acc in metrics.csv and its best
    checkpoint exists."""
    run = ws.battery.baseline()
    record = run_json(run)
    accs = column(csv_rows(run), "val/acc")
    best = record.get("monitor", {}).get("best")
    ckpt = run / (record.get("best_checkpoint") or "missing")
    if record.get("status") != "completed" or not accs or not ckpt.is_file():
        return silent(f"status {record.get('status')!r}, val/acc {accs}, best checkpoint {ckpt.name}")
    if best is None or not math.isclose(best, max(v for _, v in accs), abs_tol=1e-6):
        return silent(f"run.json monitor.best {best} but metrics.csv val/acc {accs}")
    return correct(f"completed, best val/acc {best:.4f}, {ckpt.name}")


def eval_reproduces_test_metrics(ws: Workspace) -> Verdict:
    """Control: mmfw-eval run=<run> reproduces the test metrics recorded by training."""
    run = ws.copy_of_baseline()
    result = ws.run("mmfw-eval", f"run={run}")
    if bad := failed_run(result):
        return bad
    evaluated = json.loads((run / "eval_metrics.json").read_text())["metrics"]
    trained = run_json(run)["test_metrics"]
    differ = {k: (v, evaluated.get(k)) for k, v in trained.items() if not math.isclose(v, evaluated.get(k, math.nan),
                                                                                      abs_tol=1e-6)}  # fmt: skip
    if differ:
        return silent(f"eval differs from training's test: {differ}")
    return correct(f"{len(trained)} metrics equal")


def eval_non_run_folder(ws: Workspace) -> Verdict:
    """mmfw-eval run=<an ordinary folder>: an error naming the folder and what a run folder is."""
    folder = ws.root / "not_a_run"
    folder.mkdir()
    return expect_error(ws.run("mmfw-eval", f"run={folder}"), r"not_a_run", r"run folder")


def eval_without_run(ws: Workspace) -> Verdict:
    """mmfw-eval without run=: an error naming the missing `run`."""
    return expect_error(ws.run("mmfw-eval"), r"\brun\b", r"missing|mandatory|required")


def eval_missing_checkpoint_path(ws: Workspace) -> Verdict:
    """mmfw-eval ckpt=<no such file>: an error naming the path."""
    run = ws.copy_of_baseline()
    return expect_error(ws.run("mmfw-eval", f"run={run}", f"ckpt={ws.root / 'gone.ckpt'}"), r"gone\.ckpt")


def eval_truncated_checkpoint(ws: Workspace) -> Verdict:
    """mmfw-eval ckpt=<a checkpoint cut in half>: an error naming the file (not a bare zip-reader error)."""
    run = ws.copy_of_baseline()
    broken = run / "checkpoints" / "half.ckpt"
    data = (run / "checkpoints" / "last.ckpt").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    return expect_error(ws.run("mmfw-eval", f"run={run}", f"ckpt={broken}"), r"half\.ckpt")


def compare_empty_folder(ws: Workspace) -> Verdict:
    """mmfw-compare <a folder without runs>: says there are no runs there, naming the folder."""
    folder = ws.root / "no_runs_here"
    folder.mkdir()
    return expect_error(ws.run("mmfw-compare", str(folder)), r"no_runs_here", r"no run")


def resume_non_run_folder(ws: Workspace) -> Verdict:
    """resume=<an existing folder that is not a run>: an error naming the folder and what resume= needs."""
    folder = ws.root / "plain_folder"
    folder.mkdir()
    return expect_error(ws.run("mmfw-train", f"resume={folder}"), r"plain_folder", r"run folder")


def sigterm_during_training(ws: Workspace) -> Verdict:
    """SIGTERM (a scheduler's preemption) mid-training: exit 143, run.json `interrupted` naming resume=, last.ckpt."""
    run = ws.root / "run"
    proc = ws.start("mmfw-train", *FAST, "trainer.max_epochs=1000", "callbacks.early_stopping=null",
                    "datamodule.batch_size=4", f"hydra.run.dir={run}")  # fmt: skip
    wait_for(run / "checkpoints" / "epoch_*.ckpt", proc, timeout=240)
    proc.send_signal(signal.SIGTERM)
    result = ws.finish(proc, timeout=time.monotonic() - proc.started + 90)
    if result.hung:
        return Verdict("HANG", "still running 90 s after SIGTERM")
    record = run_json(run)
    last = run / "checkpoints" / "last.ckpt"
    if result.returncode != 128 + signal.SIGTERM or record.get("status") != "interrupted":
        return silent(f"exit {result.returncode}, run.json status {record.get('status')!r}")
    if "resume=" not in (record.get("error") or "") or not zipfile.is_zipfile(last):
        return silent(f"run.json error {record.get('error')!r}, last.ckpt complete: {zipfile.is_zipfile(last)}")
    return correct("exit 143, interrupted, last.ckpt saved, resume= named")


def sigkill_then_resume(ws: Workspace) -> Verdict:
    """SIGKILL after the first epoch, then resume=<run>: the run completes all its epochs and records the resume."""
    run = ws.root / "run"
    epochs = 12
    proc = ws.start("mmfw-train", *FAST, f"trainer.max_epochs={epochs}", "callbacks.early_stopping=null",
                    "datamodule.batch_size=4", f"hydra.run.dir={run}")  # fmt: skip
    wait_for(run / "checkpoints" / "last.ckpt", proc, timeout=240)
    kill_group(proc)
    ws.finish(proc, timeout=30)
    if run_json(run).get("status") != "running":
        raise Broken(f"the run was not killed mid-training (status {run_json(run).get('status')!r})")
    result = ws.run("mmfw-train", f"resume={run}")
    if bad := failed_run(result):
        return bad
    record = run_json(run)
    trained = epochs_trained(run)
    resumes = record.get("resumes") or [{}]
    if record.get("status") != "completed" or trained != epochs or resumes[0].get("previous_status") != "running":
        return silent(f"status {record.get('status')!r}, {trained} epochs in metrics.csv, resumes {resumes}")
    return correct(f"completed {epochs} epochs after the kill; resume recorded")


# ---------------------------------------------------------------------------------------------- the list
@dataclass(frozen=True)
class Case:
    """A case: its point, its check, its name and what it expects (by default the check's name and docstring)."""

    point: str  # "8.1" .. "8.10": the point of issue 8 it checks; "extra": other bad input
    check: Callable[[Workspace], Verdict]
    name: str = ""
    expects: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or self.check.__name__)
        object.__setattr__(self, "expects", self.expects or " ".join((self.check.__doc__ or "").split()))


CASES = [
    Case("8.1", ddp_default_callbacks),
    Case("8.2", pickle_checkpoint_eval),
    Case("8.2", pickle_checkpoint_resume),
    Case("8.3", new_run_into_finished_run_folder),
    Case("8.3", two_new_runs_same_folder),
    Case("8.4", monitor_val_loss_mode),
    Case("8.5", manifest_duplicate_columns),
    Case("8.5", manifest_int_and_float_labels),
    Case("8.5", manifest_truncated_wav),
    Case("8.5", manifest_parquet_list_in_categorical),
    Case("8.5", manifest_symlink_escapes),
    Case("8.6", manifest_huge_number),
    Case("8.6", manifest_latin1_jsonl),
    Case("8.6", bpe_on_a_1mb_text_cell),
    Case("8.6", gpu_trainer_without_gpu),
    Case("8.6", unused_plus_override),
    Case("8.7", sigint_in_multirun),
    Case("8.7", disk_full),
    Case("8.7", git_commit_outside_repo),
    Case("8.7", resume_typo),
    Case("8.7", eval_best_checkpoint_deleted),
    Case("8.7", eval_leaves_cwd_alone),
    Case("8.8", wandb_offline_resume),
    Case("8.9", resume_with_changed_values),
    Case("8.10", tests_fail_without_data_in_ci),
    Case("8.10", tests_skip_offline_with_reason),
    Case("extra", baseline_records),
    Case("extra", eval_reproduces_test_metrics),
    Case("extra", manifest_all_modalities_train),
    *(
        Case("extra", train_error(overrides, patterns), name, expects)
        for name, expects, overrides, patterns in TRAIN_ERRORS
    ),
    Case("extra", raw_data_missing_no_download),
    Case("extra", bilinear_three_modalities),
    Case("extra", text_longer_than_encoder),
    Case("extra", manifest_missing_file),
    Case("extra", manifest_missing_target_column),
    Case("extra", manifest_empty),
    Case("extra", manifest_unknown_format),
    Case("extra", manifest_unknown_task),
    Case("extra", manifest_label_only_in_val),
    Case("extra", manifest_bad_split_value),
    Case("extra", manifest_text_in_numeric_column),
    Case("extra", manifest_nan_regression_target),
    Case("extra", manifest_corrupt_png),
    Case("extra", manifest_corrupt_wav),
    Case("extra", manifest_missing_image),
    Case("extra", eval_non_run_folder),
    Case("extra", eval_without_run),
    Case("extra", eval_missing_checkpoint_path),
    Case("extra", eval_truncated_checkpoint),
    Case("extra", compare_empty_folder),
    Case("extra", resume_non_run_folder),
    Case("extra", sigterm_during_training),
    Case("extra", sigkill_then_resume),
]


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Outcome:
    case: Case
    verdict: Verdict
    seconds: float
    outputs: list[Result]


def run_case(battery: Battery, case: Case) -> Outcome:
    start = time.monotonic()
    ws = None
    try:
        ws = Workspace(battery, case.name)
        verdict = case.check(ws)
    except Broken as err:
        verdict = Verdict("BROKEN", str(err))
    except Exception as err:  # a bug in the case: show where
        frames = traceback.extract_tb(err.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        verdict = Verdict("BROKEN", f"{type(err).__name__}: {err} ({where})")
    return Outcome(case, verdict, time.monotonic() - start, ws.results if ws else [])


def ensure_data(battery: Battery) -> None:
    """The cases read AV-digits from MMFW_AVDIGITS_RAW (or the shared copy next to the repository); without either,
    download it once here instead of in every case."""
    shared = REPO.parent / "shared" / "data" / "avdigits"
    raw = Path(os.environ.get("MMFW_AVDIGITS_RAW") or (shared if shared.is_dir() else REPO / "data/avdigits/raw"))
    if not (raw / "mnist" / "mnist.npz").is_file():
        sys.path.insert(0, str(REPO))
        from mmfw.data.download import ensure_raw_data

        print(f"downloading AV-digits into {raw} ...", flush=True)
        ensure_raw_data(raw, battery.cache / "avdigits")
    os.environ["MMFW_AVDIGITS_RAW"] = str(raw)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-j", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("-k", dest="pattern", help="only the cases whose name or point matches this regex")
    parser.add_argument("--list", action="store_true", help="list the cases and what each expects, run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (outputs of every command)")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the output of every bad case")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.pattern or re.search(args.pattern, f"{c.point} {c.name}")]
    if args.list:
        for case in cases:
            print(f"{case.point:6} {case.name:40} {case.expects}")
        return 0
    if not cases:
        parser.error(f"no case matches {args.pattern!r}")
    root = Path(tempfile.mkdtemp(prefix="mmfw-reliability-"))
    battery = Battery(root)
    ensure_data(battery)
    print(f"{len(cases)} cases, {args.jobs} at a time, in {root}", flush=True)
    start = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_case, battery, case) for case in cases]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.case.name] = outcome
            print(f"[{len(outcomes):2}/{len(cases)}] {outcome.verdict.kind:8} {outcome.case.name} "
                  f"({outcome.seconds:.0f} s)", flush=True)  # fmt: skip
    print_report([outcomes[c.name] for c in cases], root=root, verbose=args.verbose)
    counts = Counter(o.verdict.kind for o in outcomes.values())
    print(f"\n{len(cases)} cases in {time.monotonic() - start:.0f} s: "
          + ", ".join(f"{kind} {counts[kind]}" for kind in (*GOOD, *BAD)))  # fmt: skip
    if args.keep:
        print(f"outputs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if any(counts[kind] for kind in BAD) else 0


def print_report(outcomes: list[Outcome], *, root: Path, verbose: bool) -> None:
    """One line per case, in the order of CASES (paths under the temporary folder shortened to ``<tmp>``)."""
    width = shutil.get_terminal_size((160, 20)).columns
    print(f"\n{'point':6} {'case':40} {'verdict':8} {'time':>5}  detail")
    for o in outcomes:
        detail = o.verdict.detail.replace(f"{root}/{o.case.name}", "<tmp>").replace(str(root), "<tmp>")
        line = f"{o.case.point:6} {o.case.name:40} {o.verdict.kind:8} {o.seconds:4.0f}s  {detail}"
        print(line if len(line) <= max(width, 120) else line[: max(width, 120) - 1] + "…")
    if verbose:
        for o in outcomes:
            if o.verdict.kind in BAD:
                print(f"\n===== {o.case.name}: {o.verdict.kind}: {o.verdict.detail}")
                for result in o.outputs:
                    print(f"$ {shlex.join(result.command)}  -> exit {result.returncode}\n{result.output[-3000:]}")


if __name__ == "__main__":
    sys.exit(main())
