"""Render the committed systemd units under a throw-away root so `systemd-analyze` can check them.

The committed units point at the real install paths (/opt/microplate/...). `systemd-analyze
verify` insists that every Exec*= binary exists, so the tests copy each unit with those paths
moved under a temporary root and put stub executables there. Ansible does the same prefixing
with `microplate_root` (see ansible/roles/*/templates/systemd-unit.j2): one rule, two users.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "systemd"
# Path prefixes that belong to Microplate and move under `microplate_root`.
PREFIXES = ("/opt/microplate/", "/etc/microplate/", "/var/lib/microplate", "/srv/microplate/")
_EXEC = re.compile(r"^Exec\w+=[-@:+!]*(?P<path>/\S+)", re.MULTILINE)
_SCORE = re.compile(
    r"Overall exposure level for (?P<unit>\S+): (?P<score>\d+(?:\.\d+)?) (?P<word>\w+)"
)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit_files() -> list[Path]:
    return sorted(
        p for p in UNITS_DIR.iterdir() if p.suffix in {".service", ".target", ".path", ".timer"}
    )


def prefix_paths(text: str, root: str) -> str:
    for prefix in PREFIXES:
        text = text.replace(prefix, root + prefix)
    return text


def exec_paths(text: str) -> list[str]:
    return [m.group("path") for m in _EXEC.finditer(text)]


def render_units(root: Path, units: list[Path] | None = None) -> Path:
    """Write the units under ``root/etc/systemd/system`` with stub executables; return that dir."""
    target = root / "etc/systemd/system"
    target.mkdir(parents=True, exist_ok=True)
    for unit in units or unit_files():
        text = prefix_paths(unit.read_text(encoding="utf-8"), str(root))
        for path in exec_paths(text):
            stub = Path(path)
            if not stub.exists():
                stub.parent.mkdir(parents=True, exist_ok=True)
                stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
                stub.chmod(0o755)
        (target / unit.name).write_text(text, encoding="utf-8")
    return target


def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Exposure:
    unit: str
    score: float
    word: str


def security(path: Path) -> Exposure:
    """`systemd-analyze security --offline=yes` on one unit file: the overall exposure."""
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = _SCORE.search(proc.stdout + proc.stderr)
    if match is None:
        raise AssertionError(f"no exposure score for {path.name}:\n{proc.stdout}\n{proc.stderr}")
    return Exposure(match["unit"], float(match["score"]), match["word"])
