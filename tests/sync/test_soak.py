"""Hostile-input soak (issue 17, "keep it found"): the generators that found the review's
faults, bounded in time, against the real Postgres, Mosquitto, ingest process and cloud API.

- MQTT: hypothesis payloads on a device's `runs` topic: valid runs with numbers at the float
  and integer limits (NaN, infinities, 1e200, the largest double, 2**63...) at every numeric
  field, strings with NUL and other control characters at every text field, and raw bytes.
  Control runs from another device go through before, during and after.
- HTTP: schemathesis over the whole API with NUL and control characters allowed in every
  generated string, signed in as an admin (device routes with a device token).

Asserts: no 5xx, every control run stored (the ingest never stalls), every payload the wire
refuses is dead-lettered (by SHA-256) and every other one stored or dead-lettered, and the
ingest process's resident memory grows by less than `RSS_GROWTH_LIMIT`. Prints the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from core.wire import RunMessage, WireError, parse_message
from tests.cloud.conftest import S3Server, make_settings, s3_server  # noqa: F401
from tests.sync.conftest import Broker
from tests.sync.mqttc import publish_many
from tests.sync.world import PROC_PASSWORD_ENV, new_run, template_message

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

N_MQTT = 1500
HTTP_EXAMPLES = 12
RSS_GROWTH_LIMIT = 200 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]

FLOAT_LIMITS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e200, 1.7976931348623157e308, 5e-324, -0.0, 1e16, 2.0**63]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30]),
)
HOSTILE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=("Cc", "L", "N", "P", "S", "Zs")),
    max_size=40,
)


def _numeric_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _numeric_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _numeric_paths(v, (*prefix, i))
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        out.append(prefix)
    return out


TEXT_PATHS: list[tuple[Any, ...]] = [
    ("sample_number",),
    ("operator",),
    ("description",),
    ("submission_number",),
    ("calibration_id",),
    ("model", "name"),
    ("flags",),
    ("device_id",),
]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def hostile_payloads(template: RunMessage, n: int) -> list[bytes]:
    """`n` distinct payloads drawn by hypothesis (derandomized: the same every run)."""
    base = json.loads(template.model_dump_json())
    numeric = _numeric_paths(base)
    out: dict[bytes, None] = {}

    run_doc = st.builds(lambda u: {**json.loads(json.dumps(base)), "run_id": str(u)}, st.uuids())
    by_number = st.tuples(run_doc, st.sampled_from(numeric), FLOAT_LIMITS)
    by_text = st.tuples(run_doc, st.sampled_from(TEXT_PATHS), HOSTILE_TEXT)
    payload = st.one_of(
        by_number.map(lambda t: ("n", *t)),
        by_text.map(lambda t: ("t", *t)),
        st.binary(max_size=300).map(lambda b: ("b", b, None, None)),
    )

    @settings(
        max_examples=n * 3,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(payload)
    def grab(item: tuple[str, Any, Any, Any]) -> None:
        if len(out) >= n:
            return
        kind, doc, path, value = item
        if kind == "b":
            out[doc] = None
            return
        if kind == "t" and path == ("flags",):
            value = [value]
        _set(doc, path, value)
        out[json.dumps(doc).encode()] = None

    grab()
    return list(out)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def ingest_proc(broker: Broker, cloud_db: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "ingest.log").open("wb")
    env = {**os.environ, PROC_PASSWORD_ENV: broker.ingest_password, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sync.proc_ingest", "--db", cloud_db, "--port",
         str(broker.port), "--client-id", "ingest-soak"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _wait(engine: Any, sql: str, params: dict[str, Any], want: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while True:
        with engine.connect() as conn:
            got = int(conn.execute(text(sql), params).scalar() or 0)
        if got >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def _mqtt_soak(broker: Broker, cloud_db: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    bad_dev, good_dev = broker.devices[0], broker.devices[1]
    payloads = hostile_payloads(template_message(bad_dev.site, bad_dev.device), N_MQTT)
    good_tpl = template_message(good_dev.site, good_dev.device)
    controls = [new_run(good_tpl, f"S-CONTROL-{i}", seq=i) for i in range(3)]
    refused: set[str] = set()
    accepted: dict[str, str] = {}
    for p in payloads:
        try:
            msg = parse_message(p)
        except WireError:
            refused.add(hashlib.sha256(p).hexdigest())
        else:
            accepted[hashlib.sha256(p).hexdigest()] = str(getattr(msg, "run_id", ""))
    bad_topic = f"microplate/v1/{bad_dev.site}/{bad_dev.device}/runs"
    good_topic = f"microplate/v1/{good_dev.site}/{good_dev.device}/runs"
    engine = create_engine(cloud_db)
    try:
        publish_many(broker.port, good_dev.username, good_dev.password, good_topic,
                     [controls[0].model_dump_json().encode()])  # fmt: skip
        stored = "SELECT count(*) FROM runs WHERE run_id = ANY(:ids)"
        assert _wait(engine, stored, {"ids": [controls[0].run_id]}, 1, 30) == 1, "ingest not up"
        rss_before = _rss(proc.pid)
        half = len(payloads) // 2
        publish_many(broker.port, bad_dev.username, bad_dev.password, bad_topic, payloads[:half])
        publish_many(broker.port, good_dev.username, good_dev.password, good_topic,
                     [controls[1].model_dump_json().encode()])  # fmt: skip
        publish_many(broker.port, bad_dev.username, bad_dev.password, bad_topic, payloads[half:])
        publish_many(broker.port, good_dev.username, good_dev.password, good_topic,
                     [controls[2].model_dump_json().encode()])  # fmt: skip
        ids = [c.run_id for c in controls]
        got_controls = _wait(engine, stored, {"ids": ids}, 3, 40)
        dead_sql = "SELECT count(DISTINCT payload_sha256) FROM ingest_dead_letters"
        _wait(engine, dead_sql, {}, len(refused), 40)
        with engine.connect() as conn:
            dead = set(
                conn.execute(text("SELECT payload_sha256 FROM ingest_dead_letters")).scalars()
            )
            runs = {str(r) for r in conn.execute(text("SELECT run_id FROM runs")).scalars()}
        rss_after = _rss(proc.pid)
    finally:
        engine.dispose()
    assert got_controls == 3, "a control run did not get through: the ingest stalled"
    missing = refused - dead
    assert not missing, f"{len(missing)} refused payloads were not dead-lettered"
    lost = [h for h, rid in accepted.items() if h not in dead and rid not in runs]
    assert not lost, f"{len(lost)} valid payloads were neither stored nor dead-lettered"
    assert proc.poll() is None, "the ingest process died"
    growth = rss_after - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"ingest RSS grew by {growth / 2**20:.0f} MiB"
    return {
        "mqtt_payloads": len(payloads),
        "refused_by_wire": len(refused),
        "dead_letters": len(dead),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_after_mib": round(rss_after / 2**20, 1),
    }


def _runner(operation: Any, headers: dict[str, str], count: list[int]) -> Any:
    from schemathesis.checks import not_a_server_error

    @given(case=operation.as_strategy())
    @settings(
        max_examples=HTTP_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        count.append(1)
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    return run


def _http_soak(cloud_db: str, s3: S3Server, tmp: Path) -> dict[str, Any]:
    import schemathesis

    from tests.cloud.world import build_world, open_client

    cfg = make_settings(cloud_db, tmp, s3, login_rate_per_minute=100_000)
    count: list[int] = []
    failures: list[str] = []
    with open_client(cfg) as client:
        world = build_world(cfg, client)
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
        schema.config.generation.update(allow_x00=True, codec="utf-8")
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.startswith("/api/v1/device/"):
                headers = {"Authorization": f"Bearer {world.device_token_a}"}
            else:
                headers = world.actors["admin"].headers

            run = _runner(operation, headers, count)
            try:
                run()
            except Exception as exc:  # every operation's failure is collected
                failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:1500])
    assert not failures, "\n\n".join(failures)
    return {"http_cases": len(count), "http_5xx": len(failures)}


def test_hostile_soak(
    broker: Broker,
    cloud_db: str,
    ingest_proc: subprocess.Popen[bytes],
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    figures = _mqtt_soak(broker, cloud_db, ingest_proc)
    figures |= _http_soak(cloud_db, s3_server, tmp_path)
    # After both, the ingest still takes a run at once.
    good = broker.devices[1]
    last = new_run(template_message(good.site, good.device), "S-CONTROL-LAST", seq=9)
    publish_many(broker.port, good.username, good.password,
                 f"microplate/v1/{good.site}/{good.device}/runs",
                 [last.model_dump_json().encode()])  # fmt: skip
    engine = create_engine(cloud_db)
    try:
        got = _wait(
            engine, "SELECT count(*) FROM runs WHERE run_id = :id", {"id": last.run_id}, 1, 20
        )
    finally:
        engine.dispose()
    assert got == 1
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nsoak figures: {json.dumps(figures)}")
