"""A plate is (site, device, plate_id): another appliance's run never supersedes it.

The same image bytes give the same `plate_id` on any appliance (uuid5 of the sha256). Two
appliances of one site (and one of another site) send runs with that plate id under other
sample numbers, one of them naming the first appliance's run as the run it re-reads; through
the ingest's writer (both its bulk path and `upsert_run`) the first appliance's sample keeps
its plate (issue 16 point 3, issue 17 point 6).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from tests.cloud.factory import run_message
from tests.sync.conftest import cloud_database
from tests.sync.world import accounts

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("path", ["bulk", "one_by_one"])
def test_another_device_never_supersedes_a_plate(path: str) -> None:
    from cloud.ingest.validate import Accepted, Incoming, KnownDevice
    from cloud.ingest.writer import write_batch
    from cloud.models import Device, Site

    devices = accounts(2, 2)  # site-0: dev-0, dev-1; site-1: dev-0, dev-1
    a, b, other_site = devices[0], devices[1], devices[2]
    plate = uuid.uuid4()  # the same bytes, copied onto other appliances

    def msg(acc, sample: str, minutes: int, supersedes: uuid.UUID | None = None):  # type: ignore[no-untyped-def]
        return run_message(
            site=acc.site,
            device=acc.device,
            sample_number=sample,
            endpoints=(5,) * 8,
            plate_id=uuid.uuid4() if supersedes else plate,
            captured_at=T0 + timedelta(minutes=minutes),
            supersedes=supersedes,
        )

    original = msg(a, "S-A", 0)
    copied = msg(b, "S-B", 5)  # newer, same plate id, another device of the same site
    forged = msg(b, "S-A", 6, supersedes=original.run_id)  # claims to re-read a's run
    elsewhere = msg(other_site, "S-A", 7)
    batches = (
        [[original, copied, forged, elsewhere]]
        if path == "bulk"
        else [[original], [copied], [forged], [elsewhere]]
    )
    now = datetime.now(timezone.utc)
    with cloud_database(devices) as url:
        engine = create_engine(url)
        try:
            with Session(engine) as session:
                known = {
                    (s.slug, d.slug): d
                    for d, s in session.query(Device, Site).join(Site, Site.id == Device.site_id)
                }
                for batch in batches:
                    items = []
                    for m in batch:
                        d = known[(m.site_id, m.device_id)]
                        kd = KnownDevice(d.id, d.site_id, m.site_id, m.device_id)
                        items.append(Accepted(Incoming("t", b"", now), kd, m))
                    result = write_batch(session, items, now=now)
                    assert not result.refused
                    session.commit()
            with engine.connect() as conn:
                status = dict(conn.execute(text("SELECT run_id, status FROM runs")).all())
                plates = {
                    (r[0], r[1]): r[2]
                    for r in conn.execute(
                        text(
                            "SELECT s.slug, smp.sample_number, smp.n_plates FROM samples smp "
                            "JOIN sites s ON s.id = smp.site_id"
                        )
                    )
                }
                superseded_by = conn.execute(
                    text("SELECT superseded_by FROM runs WHERE run_id = :r"),
                    {"r": original.run_id},
                ).scalar()
        finally:
            engine.dispose()
    assert status[original.run_id] == "current" and superseded_by is None
    assert status[copied.run_id] == status[forged.run_id] == status[elsewhere.run_id] == "current"
    # S-A of site-0 holds a's plate and b's; S-B holds b's copy (another plate, same id).
    assert plates == {("site-0", "S-A"): 2, ("site-0", "S-B"): 1, ("site-1", "S-A"): 1}
