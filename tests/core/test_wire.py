from __future__ import annotations

import contextlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.calibration import CalibrationGrid
from core.plate import PLATE_96, PLATE_384
from core.titre import DilutionSettings, row_results
from core.wells import call_wells
from core.wire import (
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    Ack,
    DesiredConfig,
    DeviceStatus,
    RunEvent,
    RunMessage,
    WireError,
    build_run_message,
    encode_message,
    parse_message,
)
from tests.core.helpers import calls_from_rows, det_in

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
SHA = "ab" * 32


def run_fields(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "run_id": uuid.UUID(int=1),
        "plate_id": uuid.UUID(int=2),
        "edit": 0,
        "device_id": "edge-01",
        "site_id": "lab_north",
        "sample_number": "S-001",
        "submission_number": "SUB-7",
        "description": "flock 12\nafter boost",
        "operator": "ana",
        "captured_at": NOW,
        "processed_at": NOW + timedelta(seconds=2),
        "model": {"name": "hi-yolo", "version": "1.2.0", "sha256": SHA},
        "calibration_id": "0" * 64,
        "plate_format": 96,
        "dilution": DilutionSettings(),
        "min_confidence": 0.5,
        "images": [{"role": "raw", "key": "edge-01/2026/11/26/run.jpg", "sha256": SHA}],
    }
    fields.update(over)
    return fields


def valid_run(patterns: list[str] | None = None, **over: Any) -> RunMessage:
    calls = calls_from_rows(patterns or ["FFFFFAAAAAAA", "FFUAAAAAAAAA", "A" * 12, "F" * 12])
    fields = run_fields(**over)
    rows = row_results(calls, PLATE_96, dilution=fields["dilution"])
    return build_run_message(calls=calls, rows=rows, **fields)


def test_run_message_round_trip() -> None:
    msg = valid_run()
    data = encode_message(msg)
    parsed = parse_message(data)
    assert parsed == msg and isinstance(parsed, RunMessage)
    assert parsed.schema_version == SCHEMA_VERSION == 1 and parsed.kind == "run"
    assert parsed.distribution["5"] == 1 and parsed.distribution["0"] == 5
    calls = parsed.well_calls()
    assert list(calls) == PLATE_96.well_ids() and calls["B3"].state == "unread"


def test_run_message_from_a_real_pipeline() -> None:
    grid = CalibrationGrid.uniform(1700, 1200, PLATE_384)
    dets = [det_in(grid, 0, c, "Flowing", 0.9) for c in range(5)]
    calls = call_wells(dets, grid)
    rows = row_results(calls, PLATE_384)
    msg = build_run_message(
        calls=calls, rows=rows, **run_fields(plate_format=384, calibration_id=grid.grid_id)
    )
    data = encode_message(msg)
    assert len(data) < MAX_MESSAGE_BYTES
    assert parse_message(data) == msg
    assert msg.wells["A1"].box == dets[0].box and msg.wells["A1"].class_name == "Flowing"


def test_times_are_normalised_to_utc() -> None:
    local = datetime(2026, 11, 26, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    msg = valid_run(captured_at=local)
    assert msg.captured_at == NOW and msg.captured_at.utcoffset() == timedelta(0)


def _mutated(change) -> bytes:
    data = json.loads(encode_message(valid_run()))
    change(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["wells"]["A1"].__setitem__("confidence", 1.5), "wells.A1.confidence:"),
        (lambda d: d["wells"]["A1"].__setitem__("state", "maybe"), "wells.A1.state:"),
        (lambda d: d["wells"].pop("H12"), "wells: a 96-well run needs every well once"),
        (lambda d: d["wells"].__setitem__("Z1", d["wells"]["A1"]), "wells.Z1.[key]:"),
        (lambda d: d.__setitem__("captured_at", "2026-11-26T09:00:00"), "captured_at:"),
        (lambda d: d.__setitem__("device_id", "a/b"), "device_id:"),
        (lambda d: d.__setitem__("site_id", "#"), "site_id:"),
        (lambda d: d.__setitem__("sample_number", "x" * 65), "sample_number:"),
        (lambda d: d.__setitem__("sample_number", " S-001"), "sample_number:"),
        (lambda d: d.__setitem__("operator", "a\x00b"), "operator:"),
        (lambda d: d.__setitem__("edit", -1), "edit:"),
        (lambda d: d.__setitem__("run_id", "not-a-uuid"), "run_id:"),
        (lambda d: d.__setitem__("schema_version", 2), "schema_version:"),
        (lambda d: d.__setitem__("surprise", 1), "surprise:"),
        (lambda d: d["model"].__setitem__("sha256", "xyz"), "model.sha256:"),
        (lambda d: d["distribution"].__setitem__("5", 3), "distribution: does not match"),
        (lambda d: d["rows"][0].__setitem__("label", "Q"), "rows.0.label:"),
        (lambda d: d["rows"].pop(), "rows: expected rows 0..7"),
        (lambda d: d["images"][0].__setitem__("key", "../etc/passwd"), "images.0.key:"),
        (lambda d: d["images"][0].__setitem__("key", "/abs"), "images.0.key:"),
        (lambda d: d["dilution"].__setitem__("control_columns", [13]), "dilution.control_columns"),
        (lambda d: d.__setitem__("supersedes", d["run_id"]), "supersedes:"),
        (lambda d: d.__setitem__("kind", "rerun"), "kind: unknown kind"),
        (lambda d: d.pop("kind"), "kind: missing"),
    ],
)
def test_bad_run_messages_name_the_field(change, field: str) -> None:
    with pytest.raises(WireError) as info:
        parse_message(_mutated(change))
    assert str(info.value).startswith(field), str(info.value)


@pytest.mark.parametrize(
    "data",
    [b"", b"null", b"[]", b"{}", b"\xff\xfe", b'{"kind": 1}', b"NaN", b"[" * 100_000, 42, "text"],
)
def test_garbage_raises_wire_error(data: Any) -> None:
    with pytest.raises(WireError):
        parse_message(data)


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(WireError, match="over the 262144-byte limit"):
        parse_message(b" " * (MAX_MESSAGE_BYTES + 1))
    huge = valid_run(description="x" * 2000)
    assert len(encode_message(huge)) < MAX_MESSAGE_BYTES


def test_nan_is_refused() -> None:
    data = encode_message(valid_run()).replace(b'"confidence":0.9', b'"confidence":NaN', 1)
    with pytest.raises(WireError, match="confidence"):
        parse_message(data)


def test_event_status_ack_and_config_round_trip() -> None:
    messages = [
        RunEvent(kind="deleted", run_id=uuid.uuid4(), edit=3, at=NOW, reason="wrong plate"),
        RunEvent(
            kind="superseded", run_id=uuid.uuid4(), edit=1, at=NOW, superseded_by=uuid.uuid4()
        ),
        DeviceStatus(
            device_id="edge-01",
            site_id="lab",
            online=True,
            version="0.1.0",
            model="hi-yolo 1.2.0",
            backend="onnxruntime",
            backlog=4,
            oldest_unsent_age_s=12.5,
            disk_free_bytes=10**10,
            at=NOW,
        ),
        Ack(run_id=uuid.uuid4(), edit=2, status="accepted"),
        Ack(run_id=uuid.uuid4(), edit=2, status="rejected", reason="sample number refused"),
        DesiredConfig(revision=7, issued_at=NOW, min_confidence=0.6, csv_template="labware"),
        DesiredConfig(revision=8, issued_at=NOW, upload_raw=True),
    ]
    for msg in messages:
        assert parse_message(encode_message(msg)) == msg


def test_event_and_ack_rules() -> None:
    with pytest.raises(ValueError, match="superseded_by"):
        RunEvent(kind="superseded", run_id=uuid.uuid4(), edit=0, at=NOW)
    with pytest.raises(ValueError, match="reason"):
        Ack(run_id=uuid.uuid4(), edit=0, status="rejected")
    with pytest.raises(WireError, match=r"^status: "):
        parse_message(
            json.dumps(
                {"kind": "ack", "run_id": str(uuid.uuid4()), "edit": 0, "status": "ok"}
            ).encode()
        )


def test_build_run_message_reports_bad_fields() -> None:
    with pytest.raises(WireError, match=r"^device_id:"):
        valid_run(device_id="has space")


# --- property tests -------------------------------------------------------------------

patterns = st.lists(st.text(alphabet="FAIU", min_size=12, max_size=12), min_size=8, max_size=8)
sample_numbers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ./_-]{0,40}[A-Za-z0-9]", fullmatch=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=patterns,
    sample=sample_numbers,
    edit=st.integers(0, 2**31 - 1),
    start=st.sampled_from([2, 8, 10]),
    offset=st.integers(-12, 14),
)
def test_run_messages_round_trip(rows, sample: str, edit: int, start: int, offset: int) -> None:
    when = NOW.astimezone(timezone(timedelta(hours=offset)))
    msg = valid_run(
        rows,
        sample_number=sample,
        edit=edit,
        dilution=DilutionSettings(start_dilution=start),
        captured_at=when,
    )
    assert parse_message(encode_message(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):  # any other exception fails the test
        parse_message(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["run", "ack", "status", "config", "deleted", "A1", SHA]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["kind", "run_id", "edit", "status", "wells", "x", "reason"])
            | st.text(),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_random_json_raises_only_wire_error(value: Any) -> None:
    with contextlib.suppress(WireError):  # any other exception fails the test
        parse_message(json.dumps(value).encode())


VALID = json.loads(encode_message(valid_run()))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*prefix, i))
    return out


PATHS = _paths(VALID)[1:]


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(PATHS), value=json_values, action=st.sampled_from(["set", "drop"]))
def test_mutated_valid_messages_raise_only_wire_error(path, value, action: str) -> None:
    data = json.loads(json.dumps(VALID))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if action == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        parsed = parse_message(json.dumps(data).encode())
    except WireError as exc:
        assert str(exc)  # always says something
        return
    assert isinstance(parsed, RunMessage)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_byte_flipped_messages_raise_only_wire_error(position: int, byte: int) -> None:
    data = bytearray(encode_message(valid_run()))
    data[position % len(data)] = byte
    with contextlib.suppress(WireError):  # any other exception fails the test
        parse_message(bytes(data))


ACK = '{"kind":"ack","run_id":"00000000-0000-0000-0000-000000000001","status":"accepted","edit":'


@pytest.mark.parametrize("edit", ["true", '"5"', "1.5", "-1", str(2**31), "1e400", "9" * 5000])
def test_wire_is_strict_about_types(edit: str) -> None:
    with pytest.raises(WireError, match=r"^(edit|message):"):
        parse_message(f"{ACK}{edit}}}".encode())
    assert parse_message(f"{ACK}5}}".encode()).edit == 5  # type: ignore[union-attr]


def test_time_out_of_range_in_utc_is_a_wire_error() -> None:
    data = b'{"kind":"config","revision":1,"issued_at":"0001-01-01T00:00:00+10:00"}'
    with pytest.raises(WireError, match=r"^issued_at: "):
        parse_message(data)


def test_desired_config_without_upload_raw_still_parses() -> None:
    older = json.dumps(
        {"kind": "config", "revision": 3, "issued_at": NOW.isoformat(), "min_confidence": 0.5}
    ).encode()
    parsed = parse_message(older)
    assert isinstance(parsed, DesiredConfig) and parsed.upload_raw is None
    with pytest.raises(WireError, match="upload_raw"):
        parse_message(
            json.dumps(
                {"kind": "config", "revision": 3, "issued_at": NOW.isoformat(), "upload_raw": "yes"}
            ).encode()
        )
