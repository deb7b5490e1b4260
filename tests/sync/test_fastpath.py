"""The ingest's bulk path writes exactly what `cloud.crud.results.upsert_run` writes.

The same messages go into two databases: once as one ingest batch (plain new runs take the
COPY path), once message by message through `upsert_run`. Runs, wells, rows and pooled
samples must be identical (compared by site/device slugs, not by generated ids).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from core.plate import PLATE_96
from core.titre import DilutionSettings, hold_for_review, row_results
from core.wells import WellCall
from core.wire import RunMessage, build_run_message
from tests.sync.conftest import cloud_database
from tests.sync.world import accounts

pytestmark = pytest.mark.postgres

QUERIES = {
    "runs": (
        "SELECT r.run_id, r.edit, s.slug, d.slug, smp.sample_number, r.plate_id, "
        "r.sample_number, r.submission_number, r.read_at, r.n_rows, r.n_cols, r.status, "
        "r.superseded_by, r.flags, r.extra, r.image_keys, r.review_reasons FROM runs r "
        "JOIN sites s ON s.id = r.site_id JOIN devices d ON d.id = r.device_id "
        "JOIN samples smp ON smp.id = r.sample_id ORDER BY r.run_id"
    ),
    "wells": "SELECT * FROM run_wells ORDER BY run_id",
    "rows": "SELECT * FROM run_rows ORDER BY run_id, row",
    "samples": (
        "SELECT s.slug, smp.sample_number, smp.submission_number, smp.n_runs, smp.n_plates, "
        "smp.rows_total, smp.n_cols, smp.distribution, smp.summary, smp.gmt, smp.flags, "
        "smp.first_read_at, smp.last_read_at FROM samples smp JOIN sites s ON s.id = smp.site_id "
        "ORDER BY s.slug, smp.sample_number"
    ),
}


def varied_message(site: str, device: str, i: int, *, sample: str, plate: uuid.UUID) -> RunMessage:
    calls = {}
    for r in range(8):
        end = (i + r) % 13
        for c in range(12):
            wid = PLATE_96.well_id(r, c)
            if (i + r + c) % 17 == 0:
                calls[wid] = WellCall(well_id=wid, row=r, col=c, state="unread")
                continue
            state = "flowing" if c < end else "agglutinated"
            flags = ("multiple",) if (r * c + i) % 11 == 0 else ()
            calls[wid] = WellCall(
                well_id=wid, row=r, col=c, state=state, confidence=0.5 + (c % 5) / 10,
                box=(1.5 * c, 2.25 * r, 1.5 * c + 9, 2.25 * r + 9), class_name=f'{state}"é\\x',
                flags=flags,
            )  # fmt: skip
    dilution = DilutionSettings(start_dilution=8)
    at = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc) + timedelta(minutes=i)
    rows = row_results(calls, PLATE_96, dilution=dilution)
    held = i % 7 == 5  # the appliance's plate-quality gate held this read
    return build_run_message(
        calls=calls,
        rows=hold_for_review(rows) if held else rows,
        needs_review=held,
        review_reasons=("grid_misfit",) if held else (),
        run_id=uuid.uuid4(),
        plate_id=plate,
        device_id=device,
        site_id=site,
        sample_number=sample,
        submission_number=f"SUB-{i % 3}" if i % 2 else None,
        description=f"plate {i}\twith a tab and \\ backslash",
        operator="ana",
        captured_at=at,
        processed_at=at + timedelta(seconds=3),
        model={"name": "hi-yolo", "version": "2", "sha256": "b" * 64},
        calibration_id="grid-2",
        plate_format=96,
        dilution=dilution,
        flags=("edge-flag",) if i % 4 == 0 else (),
        # Some name another site's object: the cloud must store the keys it builds itself.
        images=(
            [
                {"role": "annotated", "key": f"{site}/{device}/x{i}/annotated.jpg"},
                {"role": "raw", "key": f"other-site/other-device/{uuid.uuid4()}/raw.jpg"},
            ][: 1 + (i % 2)]
            if i % 3
            else []
        ),
    )


def test_bulk_path_matches_upsert_run() -> None:
    from cloud.crud.results import upsert_run
    from cloud.ingest.validate import Accepted, Incoming, KnownDevice
    from cloud.ingest.writer import write_batch
    from cloud.models import Device

    devices = accounts(2, 1)
    plates = [uuid.uuid4() for _ in range(12)]
    messages = []
    for i in range(40):
        acc = devices[i % 2]
        # Several plates per sample; plate 3 is re-read later under another sample number.
        messages.append(
            varied_message(acc.site, acc.device, i, sample=f"S-{i // 6}", plate=plates[i % 12])
        )
    now = datetime.now(timezone.utc)
    with cloud_database(devices) as bulk_url, cloud_database(devices) as ref_url:
        results = {}
        for url, how in ((bulk_url, "bulk"), (ref_url, "ref")):
            engine = create_engine(url)
            try:
                with Session(engine) as session, session.begin():
                    known = {(d.site.slug, d.slug): d for d in session.query(Device).all()}
                    if how == "bulk":
                        items = []
                        for m in messages:
                            d = known[(m.site_id, m.device_id)]
                            kd = KnownDevice(d.id, d.site_id, m.site_id, m.device_id)
                            items.append(Accepted(Incoming("t", b"", now), kd, m))
                        written = write_batch(session, items, now=now)
                        assert written.runs_written == len(messages)
                        assert not written.refused
                    else:
                        for m in messages:
                            upsert_run(session, m, device=known[(m.site_id, m.device_id)])
                with engine.connect() as conn:
                    results[how] = {
                        name: [tuple(r) for r in conn.execute(text(q))]
                        for name, q in QUERIES.items()
                    }
            finally:
                engine.dispose()
    for name in QUERIES:
        assert results["bulk"][name] == results["ref"][name], name
    assert sum(len(doc) for _, doc in results["bulk"]["wells"]) == 40 * 96
    keys = {row[0]: (row[2], row[3], row[15]) for row in results["bulk"]["runs"]}
    assert sum(len(k) for *_, k in keys.values()) == sum(len(m.images) for m in messages)
    for run_id, (site, device, stored) in keys.items():
        for role, key in stored.items():
            assert key == f"{site}/{device}/{run_id}/{role}.jpg", key
