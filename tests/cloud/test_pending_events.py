"""Events for runs that never arrive are bounded per device and in time (issue 17, point 6)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from cloud.crud import results
from cloud.crud.pending import pending_for_device, purge_pending_events
from cloud.models import Device
from tests.cloud.conftest import make_settings
from tests.cloud.factory import deleted_event, run_message
from tests.cloud.world import World, build_world, open_client

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def world(migrated_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = make_settings(migrated_db, tmp_path_factory.mktemp("pending"))
    with open_client(settings) as client:
        yield build_world(settings, client)


def _event(world: World, which: uuid.UUID, run_id: uuid.UUID, **kw: int) -> results.Applied:
    with world.sessions()() as session:
        device = session.get(Device, which)
        assert device is not None
        applied = results.apply_event(session, deleted_event(run_id, 1), device=device, **kw)
        session.commit()
        return applied


def test_a_device_may_park_only_so_many_events_for_unknown_runs(world: World) -> None:
    for _ in range(3):
        assert _event(world, world.device_a, uuid.uuid4(), max_pending=3).status == "applied"
    with pytest.raises(results.ResultError, match="more than 3 events already wait"):
        _event(world, world.device_a, uuid.uuid4(), max_pending=3)
    # Another device has its own allowance.
    assert _event(world, world.device_b, uuid.uuid4(), max_pending=3).status == "applied"
    with world.sessions()() as session:
        assert pending_for_device(session, device_id=world.device_a) == 3


def test_events_whose_run_never_came_expire(world: World) -> None:
    waiting = uuid.uuid4()
    _event(world, world.device_b, waiting)
    msg = run_message(site=world.slug_b, device="reader-1", sample_number="S-PEND")
    with world.sessions()() as session:
        device = session.get(Device, world.device_b)
        results.upsert_run(session, msg, device=device)
        session.commit()
    _event(world, world.device_b, msg.run_id)  # its run is stored: not pending
    with world.sessions()() as session:
        session.execute(text("UPDATE run_events SET applied_at = now() - interval '8 days'"))
        deleted = purge_pending_events(session, now=datetime.now(timezone.utc))
        session.commit()
        left = set(session.execute(text("SELECT run_id FROM run_events")).scalars())
    assert deleted >= 1
    assert waiting not in left
    assert msg.run_id in left
    with world.sessions()() as session:
        assert purge_pending_events(session, now=datetime.now(timezone.utc) - timedelta(0)) == 0
