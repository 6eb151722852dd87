"""Imports flow one way (DESIGN "Layout"): encoders and fusion import neither data nor runs; data imports neither
the module nor runs; the contracts import nothing of mmfw. Read with ast, so nothing is imported to check it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmfw"
RULES = {  # files under PACKAGE/<key> must not import any of these mmfw modules (or anything below them)
    "encoders": ("mmfw.data", "mmfw.runs", "mmfw.module", "mmfw.train"),
    "fusion": ("mmfw.data", "mmfw.runs", "mmfw.module", "mmfw.train"),
    "data": ("mmfw.module", "mmfw.runs", "mmfw.train", "mmfw.evaluate", "mmfw.feature_cache", "mmfw.robustness"),
    "contracts.py": ("mmfw.",),
    "text_tokens.py": ("mmfw.",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("where", sorted(RULES))
def test_imports_flow_one_way(where):
    files = sorted((PACKAGE / where).rglob("*.py")) if (PACKAGE / where).is_dir() else [PACKAGE / where]
    assert files and all(f.is_file() for f in files), where
    bad = [
        f"{f.relative_to(PACKAGE.parent)} imports {name}"
        for f in files
        for name in sorted(imported_modules(f))
        if any(name == banned or name.startswith(banned.rstrip(".") + ".") for banned in RULES[where])
    ]
    assert not bad, "\n".join(bad)
