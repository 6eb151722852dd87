"""``mmfw-train --help`` is answered from conf/ before Hydra composes: true to the config tree, Hydra's help kept
behind ``--hydra-help``. Its speed is measured by bench/startup.py, not asserted here."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType

from mmfw import train as train_module
from mmfw.runs import usage
from mmfw.runs.config import CONFIG_DIR


def hydra_groups(config_dir: str) -> dict[str, list[str]]:
    """Every group and its options as Hydra's own ``--help`` lists them (its config repository, plugins included)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def walk(parent: str) -> dict[str, list[str]]:
            found = {}
            for name in loader.list_groups(parent):
                group = f"{parent}/{name}" if parent else name
                if options := loader.get_group_options(group, ObjectType.CONFIG):
                    found[group] = sorted(options)
                found |= walk(group)
            return found

        return walk("")


def help_lines(text: str) -> dict[str, list[str]]:
    """``group: a, b*, c (none by default)`` lines of the help -> ``group -> [a, b, c]``."""
    groups = {}
    section = text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    for line in section.splitlines():
        group, sep, rest = line.partition(": ")
        if sep and " " not in group:
            groups[group] = [option.rstrip("*") for option in rest.split(" (")[0].split(", ")]
    return groups


def test_help_lists_every_group_and_option_hydra_lists():
    text = usage.help_text(Path(CONFIG_DIR), "train", command="mmfw-train")
    listed = help_lines(text)
    # Hydra's help leaves out its own hydra/* groups (they are in --hydra-help): every other one is here, complete.
    expected = {group: options for group, options in hydra_groups(CONFIG_DIR).items() if not group.startswith("hydra")}
    assert expected and {group: listed.get(group) for group in expected} == expected
    # The hydra/* options mmfw configures itself (conf/hydra/launcher/slurm.yaml) are listed too.
    assert "slurm" in listed["hydra/launcher"]
    assert "fusion: attention, bilinear, concat*," in text  # the default marked
    assert "experiment:" in text and "(none by default)" in text
    for how in ("--cfg job", "-m ", "--hydra-help", "foo.bar=value"):
        assert how in text


def test_a_new_option_file_and_group_appear_without_code_changes(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "fusion" / "zz_new.yaml").write_text("_target_: mmfw.fusion.ConcatFusion\n")
    (conf / "augment" / "light").mkdir(parents=True)
    (conf / "augment" / "light" / "flip.yaml").write_text("p: 0.5\n")
    listed = help_lines(usage.help_text(conf, "train", command="mmfw-train"))
    assert listed["fusion"][-1] == "zz_new"
    assert listed["augment/light"] == ["flip"]
    hydras = {group: options for group, options in hydra_groups(str(conf)).items() if not group.startswith("hydra")}
    assert {group: options for group, options in listed.items() if not group.startswith("hydra")} == hydras


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_mmfw_train_help_is_answered_before_hydra(flag, monkeypatch, capsys):
    composed = []
    monkeypatch.setattr(train_module, "run", lambda: composed.append(True))
    monkeypatch.setattr(sys, "argv", ["mmfw-train", "fusion=late", flag])
    assert train_module.main() is None
    assert not composed
    assert "fusion: attention" in capsys.readouterr().out


def test_hydra_help_stays_hydras(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MMFW_ROOT", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["mmfw-train", "--hydra-help"])
    with pytest.raises(SystemExit) as exit:
        train_module.main()
    assert exit.value.code in (0, None)
    out = capsys.readouterr().out
    assert "== Flags ==" in out and "hydra/launcher:" in out and "joblib" in out


def test_help_with_another_config_is_left_to_hydra():
    assert usage.wants_help(["fusion=late", "-h"]) and usage.wants_help(["--help"])
    assert not usage.wants_help(["--hydra-help"])
    assert not usage.wants_help(["--help", "--config-dir", "/elsewhere"])
    assert not usage.wants_help(["--help", "--config-name=other"])
