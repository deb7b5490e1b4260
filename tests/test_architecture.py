"""The dependency rule of ARCHITECTURE.md, checked by parsing every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> packages it must never import
FORBIDDEN = {
    "core": {"edge", "cloud"},
    "edge": {"cloud"},
    "cloud": {"edge"},
}
# The runtime never imports GPL/AGPL code (Ultralytics is AGPL: training extra only).
NEVER_AT_RUNTIME = {"ultralytics"}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_dependency_rule(package: str) -> None:
    files = python_files(package)
    assert files, f"{package}/ has no Python files"
    offenders = []
    for path in files:
        bad = imported_top_levels(path) & (FORBIDDEN[package] | NEVER_AT_RUNTIME)
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import edge.store\nfrom cloud import api\nfrom . import local\n")
    assert imported_top_levels(sample) == {"edge", "cloud"}
