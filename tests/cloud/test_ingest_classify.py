"""`cloud.ingest.validate.classify` without a broker or database: values that the wire allows
but the cloud's columns cannot hold are refused with the field that is to blame."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from cloud.ingest.validate import Accepted, Incoming, KnownDevice, Refused, classify
from core.wire import RunMessage, WireWell, encode_message
from tests.sync.world import template_message

SITE, DEVICE = "site-0", "dev-0"
KNOWN = KnownDevice(uuid.uuid4(), uuid.uuid4(), SITE, DEVICE)


def _incoming(message: RunMessage) -> Incoming:
    return Incoming(
        topic=f"microplate/v1/{SITE}/{DEVICE}/runs",
        payload=encode_message(message),
        received_at=datetime.now(timezone.utc),
    )


def _with_class_name(message: RunMessage, well_id: str, name: str) -> RunMessage:
    wells = dict(message.wells)
    wells[well_id] = WireWell(**{**wells[well_id].model_dump(), "class_name": name})
    return RunMessage.model_validate({**message.model_dump(), "wells": wells})


@pytest.mark.parametrize("well_id", ["A1", "C7", "H12"])
def test_a_class_name_too_long_for_the_column_is_refused_naming_the_well(well_id: str) -> None:
    message = _with_class_name(template_message(SITE, DEVICE), well_id, "x" * 33)
    out = classify(_incoming(message), lambda site, device: KNOWN)
    assert isinstance(out, Refused)
    assert out.reason == f"wells.{well_id}.class_name: longer than 32 characters"
    assert (out.run_id, out.edit) == (message.run_id, 0)


def test_a_class_name_that_fits_is_accepted() -> None:
    message = _with_class_name(template_message(SITE, DEVICE), "B2", "x" * 32)
    out = classify(_incoming(message), lambda site, device: KNOWN)
    assert isinstance(out, Accepted) and out.message == message
