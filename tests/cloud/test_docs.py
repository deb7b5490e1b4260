"""Every setting and every CLI command is documented in docs/cloud.md."""

from __future__ import annotations

from pathlib import Path

from cloud.cli import build_parser
from cloud.settings import CloudSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cloud.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [name for name in CloudSettings.model_fields if f"`{name}`" not in DOC]
    assert not missing, f"settings missing from docs/cloud.md: {missing}"


def test_every_cli_command_is_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = list(sub.choices)  # type: ignore[arg-type]
    assert {"serve", "ingest", "migrate", "create-admin", "provision-device"} <= set(commands)
    missing = [c for c in commands if f"cloud.cli {c}" not in DOC]
    assert not missing, f"CLI commands missing from docs/cloud.md: {missing}"
