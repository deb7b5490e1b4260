from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.config import EdgeSettings, FolderCaptureSettings, describe_validation_error


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_unknown_key_is_rejected_and_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        EdgeSettings(data_dir=tmp_path, share_dir=tmp_path / "s", shre_dir="x")
    assert "shre_dir" in describe_validation_error(err.value)


def test_database_inside_share_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        EdgeSettings(data_dir=tmp_path / "d", share_dir=tmp_path, db_path=tmp_path / "x" / "m.db")
    assert "LIMS share" in describe_validation_error(err.value)
    with pytest.raises(ValidationError):
        EdgeSettings(data_dir=tmp_path / "share" / "d", share_dir=tmp_path / "share")


def test_env_nested_and_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROPLATE_EDGE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MICROPLATE_EDGE_CAPTURE__TYPE", "folder")
    monkeypatch.setenv("MICROPLATE_EDGE_CAPTURE__INBOX", str(tmp_path / "in"))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"share_dir": str(tmp_path / "share"), "queue_size": 3}))
    monkeypatch.setenv("MICROPLATE_EDGE_CONFIG_FILE", str(cfg))
    s = EdgeSettings()
    assert isinstance(s.capture, FolderCaptureSettings)
    assert s.capture.inbox == tmp_path / "in"
    assert s.queue_size == 3 and s.share_dir == tmp_path / "share"
    assert s.resolved_db_path == tmp_path / "d" / "microplate.db"


def test_bad_nested_value_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        EdgeSettings(
            data_dir=tmp_path, share_dir=tmp_path / "s", runtime={"dilution": {"factor": 1}}
        )
    assert "runtime.dilution.factor" in describe_validation_error(err.value)


def test_detector_needs_a_type(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        EdgeSettings(data_dir=tmp_path, share_dir=tmp_path / "s", detector={"model_dir": "x"})
    assert "detector" in describe_validation_error(err.value)


def test_loading_the_settings_imports_no_io_library() -> None:
    """`edge.config` is settings only: the CLI validates a configuration without paho or httpx."""
    import subprocess
    import sys

    code = "import sys, edge.config; print(sorted({m.split('.')[0] for m in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().strip("[]").replace("'", "").split(", "))
    assert "pydantic" in loaded
    assert not loaded & {"paho", "httpx", "fastapi", "numpy"}, loaded & {"paho", "httpx"}
