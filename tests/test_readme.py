"""Every command in README.md's snippets is run by a test (issue 9, point 7): the README cannot drift from the code.

The snippets are read from README.md itself. Each command of a ``bash`` block is matched by exactly one rule of
``RULES`` (a README command without one fails ``test_every_readme_command_has_a_rule``, so a new snippet needs a
test), which says how it is checked:

- ``run``: run as written from a scratch folder (``MMFW_ROOT``), with reduced sizes appended (tiny data, one or two
  epochs, two values of a sweep's first list and one of the others, two Optuna trials) and the placeholders
  (``<run folder>``, ``<sweep>``, ...) replaced by a tiny run and sweep made first. Slow: one process each; a
  block's commands run in order in one test (a later command reads what an earlier one wrote).
- ``hardware``: needs GPUs, several nodes or SLURM, which this suite does not have: its ``mmfw-train`` arguments are
  composed with Hydra (what the README can get wrong); on a machine with a GPU the single-GPU ones run.
- ``make``: ``make -n <target>`` (the targets create a virtual environment and install; the dry run checks that
  they exist and what they run).
- ``extra``: ``pip install -e '.[<extra>]'``: the extra is declared in pyproject.toml.
- ``server``: a dashboard server (TensorBoard, MLflow's UI) that runs until stopped: its ``--help`` with the same
  options must succeed, so the command and its options exist in this environment.
- ``predict``: ``mmfw-predict`` / ``mmfw-export`` need a trained manifest run: their overrides are composed with
  ``conf/predict.yaml`` / ``conf/export.yaml`` here, and tests/test_predict_export.py runs both commands.

Every ``mmfw-train`` / ``mmfw-eval`` command is also composed in-process (fast), and the ``yaml`` experiment file is
written into a config folder and trained on a tiny manifest of its columns.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import BIN, env_for, only_child, output
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from test_least_config import write_reviews

from mmfw.runs.usage import config_groups
from mmfw.train import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED_CACHE = REPO / "data" / "cache"  # the registry downloads the data tests share

# How each README command is checked: the first rule whose pattern matches (re.search) the command line.
RULES: list[tuple[str, str]] = [
    (r"^make ", "make"),
    (r"^torchrun |^srun |hydra/launcher=slurm|trainer=ddp trainer\.devices=4", "hardware"),
    (r"^mmfw-train trainer=gpu", "hardware"),
    (r"^(mmfw-train|mmfw-eval|mmfw-compare) |^mmfw-train$", "run"),
    (r"^(bash|python) bench/", "run"),
    (r"^pip install -e '\.\[\w+\]'$", "extra"),
    (r"^(tensorboard|mlflow ui) ", "server"),
    (r"^mmfw-(predict|export) ", "predict"),
]
# Appended to every command that trains on AV-digits: tiny data, CSV logs only. The shipped progress bar stays on:
# the runs are what users run (it redraws 4 times a second, so it costs them nothing measurable).
TINY = [
    "datamodule.train_size=40",
    "datamodule.val_size=20",
    "datamodule.test_size=20",
    "datamodule.batch_size=8",
    "logger=csv",
]
TINY_MANIFEST = TINY[4:]  # a manifest has no *_size keys


def readme_blocks() -> list[tuple[int, str, str]]:
    """``(line, language, text)`` of every fenced block of README.md."""
    text = README.read_text()
    return [
        (text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    ]


def block_commands(text: str) -> list[tuple[dict[str, str], str]]:
    """The commands of a shell block, each with the shell variables assigned before it: continuation lines
    joined, comments dropped."""
    variables: dict[str, str] = {}
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) == 1 and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = value
            continue
        commands.append((dict(variables), shlex.join(words)))
    return commands


def readme_commands() -> list[tuple[int, dict[str, str], str]]:
    return [
        (line, variables, command)
        for line, language, text in readme_blocks()
        if language == "bash"
        for variables, command in block_commands(text)
    ]


def rule_for(command: str) -> str | None:
    return next((how for pattern, how in RULES if re.search(pattern, command)), None)


COMMANDS = readme_commands()


def command_id(item: tuple[int, dict[str, str], str]) -> str:
    return f"L{item[0]}:{item[2][:60]}"


def expand(command: str, variables: dict[str, str]) -> list[str]:
    """The command's words, ``$VAR`` of the block expanded (a README variable holds several overrides)."""
    for name, value in variables.items():
        command = command.replace(shlex.quote(f"${name}"), value).replace(f"${name}", value)
    return shlex.split(command)


def train_args(words: list[str]) -> list[str]:
    """The Hydra overrides of the mmfw-train / mmfw-eval call inside a command (torchrun and srun wrap it)."""
    start = next(i for i, w in enumerate(words) if w.endswith(("mmfw-train", "mmfw-eval")))
    return [w for w in words[start + 1 :] if w not in ("-m", "--multirun")]


def first_values(args: list[str]) -> list[str]:
    """A sweep's overrides with one value each (what one of its jobs composes)."""
    return [f"{a.split('=', 1)[0]}={split_top(a.split('=', 1)[1])[0]}" if "=" in a else a for a in args]


def split_top(value: str) -> list[str]:
    """``concat,late`` -> two values; ``[image],[audio]`` -> two; ``[a,b]`` -> one."""
    parts, depth, current = [], 0, ""
    for ch in value:
        depth += ch in "[{(" and 1 or 0
        depth -= ch in "]})" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def compose_args(args: list[str]) -> None:
    GlobalHydra.instance().clear()
    config = "eval" if any(a.startswith("run=") for a in args) else "train"
    args = [a for a in args if not a.startswith(("run=", "resume="))]  # need a run folder, see the run tests
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        compose(config, overrides=args, return_hydra_config=True)


# ---------------------------------------------------------------- fast


def test_every_readme_command_has_a_rule():
    assert len(COMMANDS) > 30
    missing = [f"README.md:{line}: {command}" for line, _, command in COMMANDS if rule_for(command) is None]
    assert not missing, "README commands no test runs; add a rule to tests/test_readme.py:\n" + "\n".join(missing)


@pytest.mark.parametrize("item", [c for c in COMMANDS if "mmfw-train" in c[2] or "mmfw-eval" in c[2]], ids=command_id)
def test_readme_command_composes(item):
    line, variables, command = item
    words = expand(command.replace("$NODE_RANK", "0").replace("$MASTER", "localhost"), variables)
    words = [re.sub(r"<[^>]+>", "placeholder", w) for w in words]  # a run folder's <name> is not a Hydra value
    compose_args(first_values(train_args(words)))


@pytest.mark.parametrize("item", [c for c in COMMANDS if rule_for(c[2]) == "make"], ids=command_id)
def test_readme_make_targets_exist(item):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    words = shlex.split(item[2])
    result = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("item", [c for c in COMMANDS if rule_for(c[2]) == "extra"], ids=command_id)
def test_readme_extras_exist(item):
    import tomllib

    (extra,) = re.findall(r"\[(\w+)\]", item[2])
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra in extras, f"README.md:{item[0]}: no extra {extra!r} in pyproject.toml ({sorted(extras)})"


@pytest.mark.parametrize("item", [c for c in COMMANDS if rule_for(c[2]) == "server"], ids=command_id)
def test_readme_dashboard_servers_exist(item):
    words = shlex.split(item[2])
    executable = Path(sys.executable).parent / words[0]
    command = [str(executable), *(["ui"] if words[:2] == ["mlflow", "ui"] else []), "--help"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"README.md:{item[0]}: {shlex.join(command)}\n{result.stdout}{result.stderr}"
    for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
        assert option in result.stdout, f"README.md:{item[0]}: {words[0]} has no option {option}"


@pytest.mark.parametrize("item", [c for c in COMMANDS if rule_for(c[2]) == "predict"], ids=command_id)
def test_readme_predict_and_export_compose(item):
    words = [re.sub(r"<[^>]+>", "placeholder", w) for w in shlex.split(item[2])]  # <run> is not a Hydra value
    config = words[0].removeprefix("mmfw-")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config, overrides=words[1:])
    assert cfg.run and (config != "predict" or cfg.data)


# ---------------------------------------------------------------- slow: run them


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict[str, Path]:
    """A scratch MMFW_ROOT with a tiny run and a tiny sweep for the placeholders, and the files the snippets read
    (reviews.csv of the least-config snippet; bench/ for the bench scripts)."""
    root = tmp_path_factory.mktemp("readme")
    (root / "bench").symlink_to(REPO / "bench")
    write_reviews(root)
    run = shell(root, ["mmfw-train", *TINY, "trainer.max_epochs=1"])
    assert run.returncode == 0, output(run)
    sweep = shell(root, ["mmfw-train", "-m", "seed=0,1", *TINY, "trainer.max_epochs=1"])
    assert sweep.returncode == 0, output(sweep)
    return {
        "root": root,
        "run": only_child(root / "logs" / "train" / "runs"),
        "sweep": only_child(root / "logs" / "train" / "multiruns"),
    }


def shell(root: Path, words: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**env_for(root), "PATH": f"{BIN}:{env_for(root)['PATH']}", "MMFW_CACHE_DIR": str(SHARED_CACHE)}
    words = [sys.executable if w == "python" else w for w in words]
    return subprocess.run(words, cwd=root, env={**environment, **(env or {})}, capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def reduced(words: list[str], scratch: dict[str, Path]) -> tuple[list[str], dict[str, str]]:
    """The command with its placeholders filled in and its sizes reduced (see the module docstring)."""
    run, sweep = str(scratch["run"]), str(scratch["sweep"])
    fills = {"logs/train/runs/<time>_<id>": run, "<run folder>": run, "logs/train/runs/<run>": run,
             "logs/train/multiruns/<sweep>": sweep, "logs/train/multiruns/<a>": sweep,
             "logs/train/multiruns/<b>": sweep, "logs/train/runs/<A>": run}  # fmt: skip
    out = []
    for word in words:
        for placeholder, value in fills.items():
            word = word.replace(placeholder, value)
        out.append(word)
    env: dict[str, str] = {}
    if out[0] == "bash":  # bench/real_data_baselines.sh: one data set, one seed, one epoch
        env = {"DATASETS": "drug_reviews", "SEEDS": "0", "EXTRA": "trainer.max_epochs=1"}
    if out[0] != "mmfw-train":
        return out, env
    if any(w.startswith("resume=") for w in out):
        # Its own tiny 1-epoch run (resuming the shared one would make these tests depend on their order), resumed
        # with the run's own config and at most one more epoch.
        own = Path(tempfile.mkdtemp(prefix="resume-", dir=scratch["root"])) / "run"
        first = shell(scratch["root"], ["mmfw-train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={own}"])
        assert first.returncode == 0, output(first)
        out = [f"resume={own}" if w.startswith("resume=") else w for w in out]
        return [w if not w.startswith("trainer.max_epochs=") else "trainer.max_epochs=2" for w in out], env
    if "-m" in out:
        lists = [i for i, w in enumerate(out) if "=" in w and len(split_top(w.split("=", 1)[1])) > 1]
        for rank, i in enumerate(lists):
            key, value = out[i].split("=", 1)
            out[i] = f"{key}={','.join(split_top(value)[: 2 if rank == 0 else 1])}"
        out += ["hydra.sweeper.n_trials=2"] if any("hparams_search=optuna" in w for w in out) else []
    manifest = any(w.startswith(("datamodule=manifest", "experiment=")) for w in out)
    epochs = 2 if any(w.startswith("trainer.max_epochs=") for w in out) else 1
    return [*out, *(TINY_MANIFEST if manifest else TINY), f"trainer.max_epochs={epochs}"], env


def runnable_blocks() -> list[tuple[int, list[tuple[int, dict[str, str], str]]]]:
    """The bash blocks with a ``run`` or ``hardware`` command, each with those commands in README order: a block's
    later commands read what its earlier ones wrote (``mmfw-compare`` of the sweeps above it), so a block is run as
    one test, whichever worker gets it."""
    blocks: dict[int, list[tuple[int, dict[str, str], str]]] = {}
    for line, language, text in readme_blocks():
        if language == "bash":
            for variables, command in block_commands(text):
                if rule_for(command) in ("run", "hardware"):
                    blocks.setdefault(line, []).append((line, variables, command))
    return list(blocks.items())


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: command_id(b[1][0]))
def test_readme_block_runs(block, scratch):
    line, commands = block
    ran = 0
    for _, variables, command in commands:
        words = expand(command, variables)
        gpu_only = words[0] == "mmfw-train" and "trainer=gpu" in words
        if rule_for(command) == "hardware" and not (gpu_only and torch.cuda.is_available()):
            continue  # needs GPUs, several nodes or SLURM: composed in test_readme_command_composes
        words, env = reduced(words, scratch)
        result = shell(scratch["root"], words, env)
        assert result.returncode == 0, f"README.md:{line}: {shlex.join(words)}\n{output(result)}"
        ran += 1
    if not ran:
        pytest.skip("needs GPUs, several nodes or SLURM: composed in test_readme_command_composes")


@pytest.mark.slow
def test_readme_experiment_file_trains(tmp_path):
    """The README's experiment file, put into a config folder, trains on a tiny manifest with its columns."""
    ((line, _, text),) = [b for b in readme_blocks() if b[1] == "yaml"]
    name = re.search(r"conf/experiment/(\w+)\.yaml", text).group(1)
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / f"{name}.yaml").write_text(text)
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
        rows.append({"img_path": f"imgs/{i}.png", "caption": ["a cat", "a dog", "a bird"][i % 3], "label": i % 3})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    args = ["mmfw-train", "--config-dir", str(tmp_path / "conf"), f"experiment={name}",
            f"datamodule.manifest={tmp_path / 'manifest.csv'}", *TINY_MANIFEST, "trainer.max_epochs=1"]  # fmt: skip
    result = shell(tmp_path, args)
    assert result.returncode == 0, f"README.md:{line}\n{output(result)}"


def test_the_configuration_table_names_every_option():
    """README's "Configuration" table is the catalogue users read: every option file of every group in ``conf/``
    (but Hydra's and the paths) is named in its group's row, so a new option cannot go unlisted."""
    text = README.read_text()
    table = text[text.index("| group | options |") :].split("\n\n", 1)[0]
    rows = {line.split("|")[1]: line for line in table.splitlines()[2:]}
    missing = []
    for group, options in config_groups(Path(CONFIG_DIR)).items():  # what `mmfw-train --help` lists
        if group.split("/")[0] in ("hydra", "paths"):
            continue
        (row,) = [r for cell, r in rows.items() if f"`{group}`" in cell] or [""]
        missing += [f"{group}: {option}" for option in options if f"`{option}`" not in row]
    assert not missing, f"README.md's Configuration table does not name: {missing}"
