"""bench/reliability.py (run by hand): its case list and its grading, without running the cases."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import TINY_AVDIGITS

PATH = Path(__file__).resolve().parent.parent / "bench" / "reliability.py"


@pytest.fixture(scope="module")
def battery():
    spec = importlib.util.spec_from_file_location("reliability", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability"] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def test_at_least_40_uniquely_named_cases_covering_every_point_of_issue_8(battery):
    names = [case.name for case in battery.CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert {case.point for case in battery.CASES} == {f"8.{i}" for i in range(1, 11)} | {"extra"}
    assert all(case.expects for case in battery.CASES)  # each says what it expects (--list)


def test_uses_the_tests_tiny_data(battery):
    assert battery.TINY == TINY_AVDIGITS


HYDRA_ERROR = """\
Seed set to 1234
Error executing job with overrides: ['+learning_rate=0.1', 'modalities=[]']
Traceback (most recent call last):
  File "/repo/mmfw/train.py", line 43, in check_modalities
    raise ConfigError("`modalities` is empty: list at least one, e.g. modalities=[image]")
mmfw.train.ConfigError: something went wrong

Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
"""


def test_only_what_the_user_is_told_counts(battery):
    said = battery.what_was_said(HYDRA_ERROR)
    assert "learning_rate" not in said  # Hydra's echo of the overrides
    assert "modalities" not in said  # the source line in the traceback quotes the code, not the message
    assert battery.error_line(said) == "mmfw.train.ConfigError: something went wrong"
    result = battery.Result(["mmfw-train"], 1, HYDRA_ERROR, 1.0)
    assert battery.expect_error(result, "modalities").kind == "UNCLEAR"
    assert battery.expect_error(result, "something went wrong").kind == "clear"
    assert battery.expect_error(battery.Result([], 0, "done", 1.0), "x").kind == "SILENT"
    assert battery.expect_error(battery.Result([], None, "", 9.0), "x").kind == "HANG"


def test_hydra_instantiation_errors_give_the_exception_line(battery):
    output = "Error in call to target 'Trainer':\nMisconfigurationException('No gpu')\nfull_key: trainer"
    assert battery.error_line(battery.what_was_said(output)) == "MisconfigurationException('No gpu')"


def test_learning_rates_without_an_epoch_take_the_next_rows_epoch(battery, tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,lr-AdamW,step,val/acc\n,0.001,0,\n0,,4,0.5\n,0.0005,5,\n1,,9,0.6\n"
    )
    rows = battery.csv_rows(tmp_path)
    assert battery.column(rows, "lr-AdamW") == [(0, 0.001), (1, 0.0005)]
    assert battery.epochs_trained(tmp_path) == 2
