"""`core.pooling` is the one pooling decision: what the cloud stores must be what it says.

Hypothesis generates histories of runs from two appliances of one site that share plate ids
(copied image bytes) and sample numbers: new reads, re-reads that name the run they supersede,
`superseded` and `deleted` events, rows that are excluded (unread) or censored. Each history
goes into Postgres either through the ingest's batch writer (plain runs take the COPY path and
`cloud.ingest.pooling`'s SQL) or message by message through `cloud.crud.results`; every
sample's stored summary must equal `core.pooling.pool_sample` over the same runs, computed here
from the history alone.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core.pooling import PlateRead, pool_sample
from core.wire import RunEvent, RunMessage
from tests.cloud.factory import run_message
from tests.sync.conftest import cloud_database
from tests.sync.world import accounts

pytestmark = pytest.mark.postgres

DEVICES = accounts(1, 2)  # one site, two appliances
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
ENDPOINT = st.sampled_from([None, 0, 1, 3, 5, 8, 12])  # None: an unread (excluded) row


@dataclass
class Model:
    """A run as the history leaves it: the reads `core.pooling` is given."""

    device: int
    message: RunMessage
    edit: int = 0
    deleted: bool = False
    superseded_by: uuid.UUID | None = None


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with cloud_database(DEVICES) as url:
        eng = create_engine(url)
        try:
            yield eng
        finally:
            eng.dispose()


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("read"),
            st.integers(0, 1),  # device
            st.integers(0, 2),  # plate
            st.integers(0, 2),  # sample
            st.lists(ENDPOINT, min_size=8, max_size=8),
            st.booleans(),  # names the run it re-reads (supersedes)
        ),
        st.tuples(st.just("delete"), st.integers(0, 30)),
        st.tuples(st.just("supersede"), st.integers(0, 30), st.integers(0, 30)),
    ),
    min_size=1,
    max_size=14,
)


def history(ops: list[Any], tag: str) -> tuple[list[Model], list[tuple[int, Any]]]:
    """The runs the history leaves, and the messages it sends as (device, message)."""
    plates = [uuid.uuid4() for _ in range(3)]
    runs: list[Model] = []
    sent: list[tuple[int, Any]] = []
    for i, op in enumerate(ops):
        if op[0] == "read":
            _, dev, plate, sample, ends, names_old = op
            live = [
                r
                for r in runs
                if r.device == dev
                and r.message.plate_id == plates[plate]
                and not r.deleted
                and r.superseded_by is None
            ]
            old = live[-1] if names_old and live else None
            msg = run_message(
                site=DEVICES[dev].site,
                device=DEVICES[dev].device,
                sample_number=f"{tag}-S{sample}",
                endpoints=ends,
                plate_id=plates[plate],
                captured_at=T0 + timedelta(minutes=i // 2),  # some ties: run_id decides
                supersedes=old.message.run_id if old else None,
            )
            if old is not None:
                old.superseded_by = msg.run_id
            runs.append(Model(dev, msg))
            sent.append((dev, msg))
        elif runs:
            target = runs[op[1] % len(runs)]
            target.edit += 1
            if op[0] == "delete":
                target.deleted = True
                event = RunEvent(
                    kind="deleted", run_id=target.message.run_id, edit=target.edit, at=T0
                )
            else:
                by = runs[op[2] % len(runs)].message.run_id
                target.superseded_by = by
                event = RunEvent(
                    kind="superseded",
                    run_id=target.message.run_id,
                    edit=target.edit,
                    at=T0,
                    superseded_by=by,
                )
            sent.append((target.device, event))
    return runs, sent


def apply(session: Session, sent: list[tuple[int, Any]], cuts: list[int], via: str) -> None:
    from cloud.crud.results import apply_event, upsert_run
    from cloud.ingest.validate import Accepted, Incoming, KnownDevice
    from cloud.ingest.writer import write_batch
    from cloud.models import Device, Site

    devices = []
    for acc in DEVICES:
        found = (
            session.query(Device)
            .join(Site, Site.id == Device.site_id)
            .filter(Site.slug == acc.site, Device.slug == acc.device)
            .one()
        )
        devices.append(found)
    now = datetime.now(timezone.utc)
    if via == "orm":
        for dev, msg in sent:
            if isinstance(msg, RunMessage):
                upsert_run(session, msg, device=devices[dev])
            else:
                apply_event(session, msg, device=devices[dev])
            session.commit()
        return
    bounds = sorted({0, len(sent), *(c % (len(sent) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        items = [
            Accepted(
                Incoming("t", b"", now),
                KnownDevice(devices[d].id, devices[d].site_id, DEVICES[d].site, DEVICES[d].device),
                m,
            )
            for d, m in sent[start:end]
        ]
        result = write_batch(session, items, now=now)
        assert not result.refused, result.refused
        session.commit()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=OPS, cuts=st.lists(st.integers(0, 30), max_size=3), via=st.sampled_from(["batch", "orm"])
)
def test_stored_samples_are_what_core_pooling_decides(
    engine: Engine, ops: list[Any], cuts: list[int], via: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    runs, sent = history(ops, tag)
    if not runs:
        return
    device_ids: dict[int, str] = {}
    with Session(engine) as session:
        apply(session, sent, cuts, via)
        for i, acc in enumerate(DEVICES):
            device_ids[i] = str(
                session.execute(
                    text(
                        "SELECT d.id FROM devices d JOIN sites s ON s.id = d.site_id "
                        "WHERE s.slug = :site AND d.slug = :dev"
                    ),
                    {"site": acc.site, "dev": acc.device},
                ).scalar_one()
            )
        stored = {
            r[0]: r[1]
            for r in session.execute(
                text("SELECT sample_number, summary FROM samples WHERE sample_number LIKE :p"),
                {"p": f"{tag}-%"},
            )
        }
    reads = [
        PlateRead(
            run_id=r.message.run_id,
            sample_number=r.message.sample_number,
            plate_id=r.message.plate_id,
            read_at=r.message.captured_at,
            rows=tuple(r.message.rows),
            superseded_by=r.superseded_by,
            deleted=r.deleted,
            device=device_ids[r.device],
        )
        for r in runs
    ]
    assert set(stored) == {r.sample_number for r in reads}
    for sample, summary in stored.items():
        expected = pool_sample(sample, reads, n_cols=12).model_dump(mode="json")
        assert summary == expected, sample
