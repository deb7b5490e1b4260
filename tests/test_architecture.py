"""The dependency rule of ARCHITECTURE.md, checked by parsing every import."""

from __future__ import annotations

import ast
import re
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


_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|BEGIN)\b")


def sql_strings(path: Path) -> list[int]:
    """Lines of string constants in `path` that are SQL statements."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.match(node.value)
    )


def test_only_edge_db_runs_sql() -> None:
    files = [p for p in python_files("edge") if "db" not in p.relative_to(ROOT).parts[1:2]]
    assert len(files) > 50
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in files for n in sql_strings(p)]
    assert not offenders, "SQL outside edge/db/: " + ", ".join(offenders)
    assert sql_strings(ROOT / "edge" / "db" / "runs.py"), "the SQL checker found no SQL in edge/db"


def test_sql_checker_sees_sql(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text(
        'doc = "Select a plate"\nq = (\n    "SELECT run_id FROM runs "\n    "WHERE x"\n)\n'
    )
    assert sql_strings(sample) == [3]


# The composition root and the services stay narrow; data models (settings, records, API
# schemas: fields, not behaviour) and edge/detect (its own package with its own README) aside.
MAX_PUBLIC_MEMBERS = 17


def public_members(cls: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
            for sub in ast.walk(node):
                targets = (
                    sub.targets
                    if isinstance(sub, ast.Assign)
                    else [sub.target]
                    if isinstance(sub, ast.AnnAssign)
                    else []
                )
                for t in targets:
                    if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self":
                        names.add(t.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def _is_data_model(cls: ast.ClassDef) -> bool:
    bases = {getattr(b, "id", getattr(b, "attr", "")) for b in cls.bases}
    decorators = {ast.unparse(d).split("(")[0] for d in cls.decorator_list}
    return bool(
        bases & {"BaseModel", "BaseSettings", "Protocol", "Exception", "Enum"}
        or bases & {b for b in bases if b.endswith(("Settings", "Error", "Out"))}
        or decorators & {"dataclass", "dataclasses.dataclass"}
    )


def test_no_wide_class_in_edge() -> None:
    wide = []
    checked = 0
    for path in python_files("edge"):
        if path.relative_to(ROOT).parts[1] == "detect":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            if cls.name.startswith("_") or _is_data_model(cls):
                continue
            checked += 1
            members = public_members(cls)
            if len(members) > MAX_PUBLIC_MEMBERS:
                wide.append(f"{path.relative_to(ROOT)}:{cls.name} has {len(members)}")
    assert checked > 20
    assert not wide, "classes with too many public members: " + "; ".join(wide)


def test_member_count_sees_attributes_and_methods() -> None:
    cls = ast.parse(
        "class A:\n    x: int\n    def __init__(self):\n        self.y = 1\n        self._z = 2\n"
        "    def run(self):\n        pass\n"
    ).body[0]
    assert isinstance(cls, ast.ClassDef)
    assert public_members(cls) == {"x", "y", "run"}
