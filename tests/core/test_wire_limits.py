"""Numbers on the wire are held to domain limits (issue 17, point 1).

A schema-valid run whose ``counted_titre`` was ``1e200`` passed validation and then overflowed
the cloud's statistics (`core.stats`), which stalled the ingest. A titre is a dilution of the
plate's own series, counts are bounded by the plate, sizes and coordinates by what they
measure, and every float is finite.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.stats import compute_statistics
from core.wire import RunMessage, WireError, encode_message, parse_message
from tests.core.test_wire import NOW, valid_run

FLOAT_LIMITS = [1e200, sys.float_info.max, 1e-300, 5e-324, 3.0, 159.99999, 2.0**31, 1e16]


def _mutated(change: Any) -> bytes:
    data = json.loads(encode_message(valid_run()))
    change(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize("value", FLOAT_LIMITS)
def test_a_counted_titre_off_the_dilution_series_is_refused(value: float) -> None:
    with pytest.raises(WireError, match=r"^rows\.0\.counted_titre:"):
        parse_message(_mutated(lambda d: d["rows"][0].__setitem__("counted_titre", value)))


@pytest.mark.parametrize("value", [1, 7, 159, 2**31, 10**30])
def test_a_titre_that_is_not_the_endpoints_dilution_is_refused(value: int) -> None:
    with pytest.raises(WireError, match=r"^rows\.0\.titre:"):
        parse_message(_mutated(lambda d: d["rows"][0].__setitem__("titre", value)))


def test_infinity_written_as_a_huge_literal_is_refused() -> None:
    data = encode_message(valid_run()).replace(
        b'"counted_titre":160.0', b'"counted_titre":1e400', 1
    )
    assert b"1e400" in data
    with pytest.raises(WireError, match="counted_titre"):
        parse_message(data)


def test_an_endpoint_on_a_control_column_is_refused() -> None:
    def change(d: dict[str, Any]) -> None:
        d["dilution"]["control_columns"] = [5]

    with pytest.raises(WireError, match=r"^rows\.0\.endpoint: column 5 is a control column"):
        parse_message(_mutated(change))


@pytest.mark.parametrize("value", [1e300, -1e300, 100_001.0])
def test_box_coordinates_stay_within_a_frame(value: float) -> None:
    with pytest.raises(WireError, match=r"^wells\.A1\.box"):
        parse_message(_mutated(lambda d: d["wells"]["A1"].__setitem__("box", [0, 0, 1, value])))


def test_sizes_and_ages_have_limits() -> None:
    with pytest.raises(WireError, match=r"^images\.0\.size_bytes"):
        parse_message(_mutated(lambda d: d["images"][0].__setitem__("size_bytes", 2**64)))
    status = {
        "kind": "status",
        "device_id": "edge-01",
        "site_id": "lab_north",
        "online": True,
        "version": "1",
        "model": "m",
        "backend": "onnx",
        "backlog": 0,
        "disk_free_bytes": 1,
        "at": NOW.isoformat(),
    }
    assert parse_message(json.dumps(status).encode()).kind == "status"
    for field, value in (("disk_free_bytes", 2**70), ("oldest_unsent_age_s", 1e300)):
        with pytest.raises(WireError, match=f"^{field}"):
            parse_message(json.dumps({**status, field: value}).encode())


def test_the_largest_real_series_still_passes() -> None:
    # 1:100000 start, factor 10 would leave int32 after 5 columns: refused by the titre limit,
    # but a 1:10 two-fold series to column 12 (20480) is an everyday plate.
    msg = valid_run(["F" * 12] * 8)
    assert parse_message(encode_message(msg)) == msg
    assert max(r.titre or 0 for r in msg.rows) == 20480


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(FLOAT_LIMITS),
        st.integers(min_value=-(2**70), max_value=2**70),
    ),
    field=st.sampled_from(["counted_titre", "titre", "endpoint"]),
    row=st.integers(min_value=0, max_value=7),
)
def test_whatever_the_wire_accepts_the_statistics_can_take(
    value: Any, field: str, row: int
) -> None:
    try:
        msg = parse_message(_mutated(lambda d: d["rows"][row].__setitem__(field, value)))
    except WireError:
        return
    assert isinstance(msg, RunMessage)
    stats = compute_statistics(msg.rows, protective_titre=40.0)
    assert stats.gmt is None or stats.gmt > 0
