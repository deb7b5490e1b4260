"""The cloud's desired config: applied once per revision, only whitelisted settings."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from core.titre import CountingPolicy, DilutionSettings
from core.wire import DesiredConfig
from edge.config import SyncSettings
from edge.sync.config import ConfigApplier, config_patch


def config(revision: int, **fields: Any) -> DesiredConfig:
    return DesiredConfig(revision=revision, issued_at=datetime.now(timezone.utc), **fields)


def test_patch_maps_wire_fields_to_runtime_settings() -> None:
    patch, ignored = config_patch(
        config(
            1,
            min_confidence=0.4,
            dilution=DilutionSettings(start_dilution=8, factor=2, control_columns=(12,)),
            protective_titre=40.0,
            csv_template="labware-legacy",
            policy=CountingPolicy(),
        ),
        ("min_confidence", "dilution", "protective_titre", "csv_template"),
    )
    assert patch == {
        "min_confidence": 0.4,
        "start_dilution": 8,
        "dilution_factor": 2,
        "control_columns": [12],
        "protective_titre": 40,
        "csv_template": "labware-legacy",
    }
    assert ignored == ["policy"]


def test_fields_outside_the_whitelist_are_ignored() -> None:
    patch, ignored = config_patch(
        config(1, min_confidence=0.4, csv_template="labware"), ("csv_template",)
    )
    assert patch == {"csv_template": "labware"}
    assert ignored == ["min_confidence"]


def test_each_revision_applies_once_and_survives_a_restart(tmp_path: Path) -> None:
    applied: list[dict[str, Any]] = []
    state = tmp_path / "sync-config.json"
    applier = ConfigApplier(apply=applied.append, state_path=state, whitelist=("min_confidence",))
    assert applier.apply(config(3, min_confidence=0.3))
    assert not applier.apply(config(3, min_confidence=0.3))  # the retained copy, again
    assert not applier.apply(config(2, min_confidence=0.9))  # older
    again = ConfigApplier(apply=applied.append, state_path=state, whitelist=("min_confidence",))
    assert again.revision == 3
    assert not again.apply(config(3, min_confidence=0.3))
    assert again.apply(config(4, min_confidence=0.35))
    assert applied == [{"min_confidence": 0.3}, {"min_confidence": 0.35}]


def test_a_refused_revision_is_recorded_not_retried(tmp_path: Path) -> None:
    calls = 0

    def refuse(patch: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("start_dilution: out of range")

    applier = ConfigApplier(apply=refuse, state_path=tmp_path / "s.json", whitelist=("dilution",))
    assert not applier.apply(config(1, dilution=DilutionSettings(start_dilution=8)))
    assert applier.state["error"] == "start_dilution: out of range"
    assert not applier.apply(config(1, dilution=DilutionSettings(start_dilution=8)))
    assert calls == 1


def test_whitelist_cannot_name_other_settings() -> None:
    with pytest.raises(ValueError, match="cannot be set remotely"):
        SyncSettings(config_whitelist=("min_confidence", "detector"))


@pytest.mark.parametrize(
    "url", ["http://broker:1883", "mqtt://", "mqtts://user:pw@broker:8883", "broker:1883"]
)
def test_bad_broker_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="broker_url"):
        SyncSettings(broker_url=url)


def test_password_file_is_read_and_its_errors_name_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    assert SyncSettings(password_file=secret).mqtt_password() == "s3cret"
    with pytest.raises(ValueError, match="password_file") as err:
        SyncSettings(password_file=tmp_path / "missing").mqtt_password()
    assert "s3cret" not in str(err.value)


def test_upload_raw_adds_and_removes_raw_and_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sync-config.json"
    local = ("annotated", "thumbnail")
    applier = ConfigApplier(apply=lambda p: None, state_path=state, whitelist=("upload_raw",))
    assert applier.upload_raw is None
    assert applier.upload_kinds(local) == local
    assert applier.upload_kinds(("annotated", "raw")) == ("annotated", "raw")  # local rules
    assert applier.apply(config(1, upload_raw=True))
    assert applier.state["applied"] == ["upload_raw"]
    assert applier.upload_kinds(local) == ("annotated", "thumbnail", "raw")
    # A revision that does not mention upload_raw keeps it.
    applier.apply(config(2, min_confidence=0.5))
    again = ConfigApplier(apply=lambda p: None, state_path=state, whitelist=("upload_raw",))
    assert again.upload_raw is True
    assert again.upload_kinds(local) == ("annotated", "thumbnail", "raw")
    assert again.apply(config(3, upload_raw=False))
    assert again.upload_kinds(("annotated", "raw")) == ("annotated",)  # the cloud said no


def test_upload_raw_outside_the_whitelist_is_ignored(tmp_path: Path) -> None:
    applier = ConfigApplier(
        apply=lambda p: None, state_path=tmp_path / "s.json", whitelist=("min_confidence",)
    )
    assert not applier.apply(config(1, upload_raw=True))
    assert applier.state["ignored"] == ["upload_raw"]
    assert applier.upload_kinds(("annotated",)) == ("annotated",)


def test_upload_raw_is_in_the_default_whitelist() -> None:
    assert "upload_raw" in SyncSettings(broker_url="mqtt://127.0.0.1:1883").config_whitelist
