"""``mmfw-train --help``: the config groups and their options, read from ``conf/`` without composing anything.

Hydra's own ``--help`` composes the whole config and then, for each of the ~140 groups it lists (its plugins' included),
deep-copies the config repository: over a second on a busy core, most of ``mmfw-train --help``. This help lists the
same groups and options by walking the config folder (a new ``conf/<group>/<option>.yaml`` shows up with no code
change), marks the defaults from the primary config's ``defaults`` list, and says how to see the rest: the composed
config is ``--cfg job``, Hydra's flags and its plugins' groups (launchers, sweepers) are ``--hydra-help``.
Imports nothing beyond PyYAML (tests/test_startup.py, tests/test_usage.py).
"""

from __future__ import annotations

from pathlib import Path

import yaml

HELP_FLAGS = ("--help", "-h")
HYDRA_GROUP = "hydra"


CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
"""Hydra flags that choose another primary config or add a config folder: their help is left to Hydra."""


def wants_help(argv: list[str]) -> bool:
    """``--help`` / ``-h`` anywhere on the command line, as Hydra reads it (``--hydra-help`` stays Hydra's), unless
    the config is not conf/train.yaml alone (``--config-name``, ``--config-dir``, ...)."""
    flags = {arg.split("=")[0] for arg in argv}
    return bool(flags & set(HELP_FLAGS)) and not flags & set(CONFIG_FLAGS)


def config_groups(config_dir: Path) -> dict[str, list[str]]:
    """``group -> sorted options`` for every folder under ``config_dir`` holding ``*.yaml`` files (nested groups as
    ``encoder/image``), as Hydra's file config source sees them; the primary configs at the top are no group."""
    groups = {}
    for folder in sorted(path for path in config_dir.rglob("*") if path.is_dir()):
        options = sorted(path.stem for path in folder.glob("*.yaml") if path.is_file())
        if options:
            groups[folder.relative_to(config_dir).as_posix()] = options
    return groups


def default_options(primary: dict) -> dict[str, str | None]:
    """``group -> option`` from the primary config's ``defaults`` list (``experiment: null`` -> None)."""
    chosen = {}
    for entry in primary.get("defaults", []):
        if not isinstance(entry, dict):
            continue  # _self_
        for key, option in entry.items():
            group = key.split()[-1].split("@")[0].lstrip("/")  # "override x", "optional x", "x@package"
            chosen[group] = option
    return chosen


def top_level_keys(primary: dict, groups: dict[str, list[str]]) -> list[str]:
    """The primary config's own keys (``seed``, ``monitor``, ...), those that no group fills."""
    return [key for key in primary if key != "defaults" and key not in groups]


def help_text(config_dir: Path, config_name: str, command: str) -> str:
    """What ``<command> --help`` prints for the primary config ``<config_dir>/<config_name>.yaml``."""
    groups = config_groups(config_dir)
    primary = yaml.safe_load((config_dir / f"{config_name}.yaml").read_text()) or {}
    defaults = default_options(primary)

    def line(group: str) -> str:
        options = [f"{option}*" if option == defaults.get(group) else option for option in groups[group]]
        unset = " (none by default)" if group in defaults and defaults[group] is None else ""
        return f"{group}: {', '.join(options)}{unset}"

    own = [line(group) for group in groups if group.split("/")[0] != HYDRA_GROUP]
    hydra = [line(group) for group in groups if group.split("/")[0] == HYDRA_GROUP]
    keys = ", ".join(top_level_keys(primary, groups))
    return "\n".join(
        [
            f"{command}: compose an experiment from {config_dir}/{config_name}.yaml and its groups (Hydra).",
            "",
            f"usage: {command} [group=option ...] [key=value ...] [--cfg job] [-m] [--hydra-help]",
            "",
            "== Configuration groups ==",
            "Compose your configuration from those groups (group=option; * marks the default)",
            "",
            *own,
            "",
            "Hydra's groups configured here (more, from Hydra's plugins: --hydra-help)",
            *hydra,
            "",
            "== Config ==",
            "Override anything in the config (foo.bar=value); +foo=value adds a key, ~foo removes one.",
            f"Top-level keys: {keys}; each group above is a key too (trainer.max_epochs=10).",
            "",
            f"  {command} [overrides] --cfg job         print the composed config (every key), without running",
            f"  {command} [overrides] --info defaults   which file each part of the config comes from",
            f"  {command} -m fusion=concat,late seed=0,1   multirun: one job per combination (a sweep)",
            f"  {command} --hydra-help                  Hydra's own flags and groups (launchers, sweepers, logging)",
            "",
        ]
    )
