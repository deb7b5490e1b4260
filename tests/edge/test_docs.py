"""Every setting and every CLI command is documented in docs/edge.md."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from edge.cli import build_parser
from edge.config import EdgeSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "edge.md").read_text(encoding="utf-8")


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        variants = [a for a in typing.get_args(ann) if isinstance(a, type)] or [ann]
        models = [v for v in variants if isinstance(v, type) and issubclass(v, BaseModel)]
        if models:
            for m in models:
                out.extend(keys(m, f"{prefix}{name}."))
        else:
            out.append(prefix + name)
    return sorted(set(out))


def test_every_setting_is_documented() -> None:
    missing = [k for k in keys(EdgeSettings) if f"`{k}`" not in DOC]
    assert not missing, f"undocumented settings: {missing}"


def test_every_command_is_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [c for c in sub.choices if f"`{c}" not in DOC]  # type: ignore[union-attr]
    assert not missing, f"undocumented commands: {missing}"
