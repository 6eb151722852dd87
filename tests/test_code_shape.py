"""Issue 10's shape rule, checked with ast: no file in mmfw/ over 400 lines, no function body over 60 lines, and
train.py an entry point of at most 120 lines.

A function is measured from its first statement (docstring included) to its last line: the signature is not
counted, because typed keyword constructors and builders list one parameter a line and that list is the
documentation of the config node, not logic. Scripts outside mmfw/ (bench/) are not held to it.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmfw"
MAX_FILE_LINES = 400
MAX_BODY_LINES = 60
MAX_TRAIN_LINES = 120


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def long_functions(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """``file:line name (N lines)`` for each function or method whose body is over :data:`MAX_BODY_LINES`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.end_lineno - node.body[0].lineno + 1
            if body > MAX_BODY_LINES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({body} lines)")
    return found


def test_no_file_over_400_lines():
    files = sorted(PACKAGE.rglob("*.py"))
    assert files
    too_long = [f"{f.relative_to(PACKAGE.parent)} ({n} lines)" for f in files if (n := line_count(f)) > MAX_FILE_LINES]
    assert not too_long, f"split these files (at most {MAX_FILE_LINES} lines): {too_long}"


def test_no_function_body_over_60_lines():
    too_long = [entry for f in sorted(PACKAGE.rglob("*.py")) for entry in long_functions(f)]
    assert not too_long, f"split these functions (body at most {MAX_BODY_LINES} lines): {too_long}"


def test_train_is_an_entry_point():
    assert line_count(PACKAGE / "train.py") <= MAX_TRAIN_LINES


def test_the_measure_counts_the_body_not_the_signature(tmp_path):
    """A 70-parameter signature over a short body passes; a long body fails (so the rule cannot pass vacuously)."""
    params = "".join(f"    p{i}: int = 0,\n" for i in range(70))
    (tmp_path / "ok.py").write_text(f"def f(\n    *,\n{params}) -> None:\n    pass\n")
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_BODY_LINES + 1))
    (tmp_path / "long.py").write_text(f"def g():\n{body}")
    assert long_functions(tmp_path / "ok.py", root=tmp_path) == []
    assert long_functions(tmp_path / "long.py", root=tmp_path) == ["long.py:1 g (61 lines)"]
