"""The notebooks in notebooks/ run from top to bottom (on tiny settings), as a user would run them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import env_for
from conftest import TINY_AVDIGITS

# In the dev extra (make install); a venv installed before they were added skips with this reason.
nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbclient: pip install -e '.[dev]'")
NotebookClient = pytest.importorskip(
    "nbclient", reason="notebook tests need nbclient: pip install -e '.[dev]'"
).NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# Replaces each notebook's `parameters` cell (papermill's convention): tiny data, two epochs.
TINY = {
    "01_quickstart": f"SIZE = {[*TINY_AVDIGITS, 'trainer.max_epochs=2']!r}",
    "02_compare_runs": f"SIZE = {[*TINY_AVDIGITS, 'trainer.max_epochs=2']!r}\nFUSIONS = 'concat,late'\nSEEDS = '0'",
    "03_your_own_data": "PAIRS = {'train': 40, 'val': 16, 'test': 16}\n"
    f"SIZE = {['trainer.max_epochs=2', 'datamodule.batch_size=8']!r}",
    "04_use_a_trained_model": "PAIRS = {'train': 40, 'val': 16, 'test': 16}\n"
    f"SIZE = {['trainer.max_epochs=2', 'datamodule.batch_size=8']!r}",
}


def test_every_notebook_is_run_by_the_tests_and_stored_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(TINY)
    for path in NOTEBOOKS.glob("*.ipynb"):
        book = nbformat.read(path, as_version=4)
        code = [cell for cell in book.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), f"{path.name} has outputs"
        assert [cell for cell in code if "parameters" in cell.metadata.get("tags", [])], f"{path.name}: no parameters"
        # Nothing reusable is defined in a notebook: it lives in mmfw.
        assert not [c for c in code if "\ndef " in f"\n{c.source}" or "\nclass " in f"\n{c.source}"], path.name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs(name, tmp_path, monkeypatch, avdigits_raw):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    (parameters,) = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = TINY[name]
    for key, value in env_for(tmp_path).items():  # runs and files under tmp_path; the kernel inherits them
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    records = list((tmp_path / "logs" / "train").rglob("run.json"))
    assert records and all('"completed"' in r.read_text() for r in records)
    if name == "03_your_own_data":  # the broken recording was skipped, and said so
        (skipped,) = (tmp_path / "logs" / "train").rglob("skipped_samples.json")
        assert '"column": "audio"' in skipped.read_text()
    if name == "04_use_a_trained_model":  # predicted every new row, exported both formats
        assert len(pd.read_csv(tmp_path / "predictions" / "predictions.csv")) == 16
        assert {p.name for p in (tmp_path / "export").iterdir()} == {"model.onnx", "model.pt", "export.json"}
