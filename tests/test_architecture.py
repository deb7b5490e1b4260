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
    sample.write_text("import edge.db.store\nfrom cloud import api\nfrom . import local\n")
    assert imported_top_levels(sample) == {"edge", "cloud"}


def _edge_import_graph() -> dict[str, set[str]]:
    """Module -> the `edge` modules it imports, typing-only and function-level imports included
    (a `from pkg import name` counts as importing `pkg.name` when that is a module)."""
    modules: dict[str, Path] = {}
    for path in python_files("edge"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        targets: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                targets += [f"{base}.{alias.name}" for alias in node.names]
        graph[mod] = {t for t in map(owner, targets) if t and t != mod}
    return graph


def test_edge_has_no_import_cycle() -> None:
    graph = _edge_import_graph()
    assert graph.get("edge.app"), "the import graph of edge/ came out empty"
    # depth-first search for a back edge; the cycle is reported as the path that closes it
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[mod] = 2
        return None

    for mod in sorted(graph):
        if mod not in state:
            cycle = visit(mod)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)
