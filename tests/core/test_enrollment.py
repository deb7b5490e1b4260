"""The enrollment bundle shared by the cloud and the appliance."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from core.enrollment import EnrollmentBundle, device_username, identity_problem

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def bundle(**changes: object) -> EnrollmentBundle:
    values: dict[str, object] = {
        "device_id": str(uuid.uuid4()),
        "site": "lab-1",
        "device": "reader-1",
        "broker_url": "mqtts://broker.example:8883",
        "mqtt_username": "lab-1.reader-1",
        "mqtt_password": "pw",
        "api_base_url": "https://cloud.example",
        "device_token": "mpd_x",
        "issued_at": NOW.isoformat(),
        "expires_at": (NOW + timedelta(days=7)).isoformat(),
    }
    values.update(changes)
    return EnrollmentBundle.model_validate(values)


def test_the_user_name_is_the_identity() -> None:
    assert device_username("lab-1", "reader-1") == "lab-1.reader-1"
    with pytest.raises(ValidationError, match="does not belong to lab-1/reader-1"):
        bundle(mqtt_username="reader-1")


@pytest.mark.parametrize(
    "field,value",
    [("site", "a/b"), ("device", "+"), ("device_id", "not-a-uuid"), ("format", 2)],
)
def test_bad_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        bundle(**{field: value})


def test_expiry() -> None:
    b = bundle()
    assert not b.expired(NOW + timedelta(days=6))
    assert b.expired(NOW + timedelta(days=7))
    # Bundles made before expiry existed have none and never expire.
    assert not bundle(issued_at=None, expires_at=None).expired(NOW + timedelta(days=999))
    with pytest.raises(ValidationError, match="not after"):
        bundle(expires_at=(NOW - timedelta(seconds=1)).isoformat())


def test_identity_problem() -> None:
    ok = identity_problem(site_id="lab-1", device_id="reader-1", username="lab-1.reader-1")
    assert ok is None
    assert identity_problem(site_id="lab-1", device_id="reader-1", username="") is None
    problem = identity_problem(site_id="site-1", device_id="edge-1", username="lab-1.reader-1")
    assert problem is not None
    assert "site-1/edge-1" in problem and "lab-1.reader-1" in problem and "enroll" in problem
