"""core/ imports only stdlib + pydantic (and core.ota cryptography, for ed25519) and avoids
what Python 3.10 lacks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
FILES = sorted(CORE.rglob("*.py"))
ALLOWED = {"core", "pydantic", "__future__"} | set(sys.stdlib_module_names)
# Model signatures are checked on the edge and made in the cloud: one shared, audited library.
ALSO_ALLOWED = {"ota.py": {"cryptography"}}
# Names added after 3.10 (JetPack 6 ships 3.10).
NOT_IN_310 = {("typing", "Self"), ("enum", "StrEnum"), ("datetime", "UTC")}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_there_are_core_modules() -> None:
    names = {p.stem for p in FILES}
    assert {"plate", "calibration", "detection", "wells", "titre", "stats", "pooling"} <= names
    assert {"labware", "wire", "sanitize", "topics"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_imports_are_stdlib_or_pydantic(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            tops = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops = {node.module.split(".")[0]}
        else:
            continue
        allowed = ALLOWED | ALSO_ALLOWED.get(path.name, set())
        assert tops <= allowed, f"{path.name} imports {sorted(tops - allowed)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_python_310_compatible(path: Path) -> None:
    tree = _tree(path)
    text = path.read_text(encoding="utf-8")
    assert "from __future__ import annotations" in text or path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                assert (node.module, alias.name) not in NOT_IN_310, f"{path.name}: {alias.name}"
        if isinstance(node, ast.Import):
            assert all(a.name != "tomllib" for a in node.names), path.name
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in NOT_IN_310, f"{path.name}: {node.attr}"
        assert type(node).__name__ != "TryStar", f"{path.name} uses except*"
