"""Data for the dashboard tests: two sites, one person per role, three appliances, runs.

Runs arrive through the cloud's ingest entry point `cloud.crud.results.upsert_run` with real
`core.wire.RunMessage`s (built by `core.wire.build_run_message` via tests.cloud.factory), and
device status through `record_device_status`, exactly what the ingest worker calls.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np

from cloud.crud import devices, results, sites, users
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.models import Device, Role
from cloud.settings import CloudSettings
from cloud.storage import ObjectStore, image_key
from core.pooling import PlateRead
from core.wire import DeviceStatus, ImageRef, RunMessage
from tests.cloud.factory import run_message

PASSWORD = "correct-horse-battery-staple"
# The worked example of DOMAIN.md: sample S-001 read on two plates (row H of plate 1 unread).
PLATE_1 = (5, 6, 5, 7, 4, 6, 5, None)
PLATE_2 = (6, 6, 5, 5, 7, 8, 6, 6)


@dataclass
class Seeded:
    tag: str
    site_a: uuid.UUID
    site_b: uuid.UUID
    site_a_name: str
    site_b_name: str
    emails: dict[str, str]
    device_ids: dict[str, uuid.UUID]
    sample_a: str
    sample_b: str
    reads_a: list[PlateRead] = field(default_factory=list)
    run_with_image: uuid.UUID | None = None
    held_run: uuid.UUID | None = None


def annotated_jpeg(endpoints: tuple[int | None, ...]) -> bytes:
    """A small drawn plate (96 circles) so the run page shows a real JPEG from S3."""
    img = np.full((300, 440, 3), 235, np.uint8)
    for r in range(8):
        end = endpoints[r]
        for c in range(12):
            colour = (40, 50, 180) if end is not None and c < end else (190, 200, 240)
            if end is None:
                colour = (150, 150, 150)
            cv2.circle(img, (30 + c * 35, 25 + r * 35), 13, colour, -1)
            cv2.rectangle(
                img, (17 + c * 35, 12 + r * 35), (43 + c * 35, 38 + r * 35), (0, 160, 0), 1
            )
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf)


def _status(
    device: Device, *, online: bool, backlog: int, age: float | None, disk: int
) -> DeviceStatus:
    return DeviceStatus(
        device_id=device.slug,
        site_id=device.site.slug,
        online=online,
        version="0.1.0",
        model="hi-yolo 1.0",
        backend="onnx",
        backlog=backlog,
        oldest_unsent_age_s=age,
        disk_free_bytes=disk,
        at=datetime.now(timezone.utc),
    )


def seed(settings: CloudSettings) -> Seeded:
    engine = make_engine(settings)
    store = ObjectStore(settings)
    tag = secrets.token_hex(3)
    now = datetime.now(timezone.utc)
    # The last half hour, squeezed into the current ISO week so the weekly charts' newest point
    # holds the worked example even just after midnight on a Monday (UTC); order is kept.
    week_start = (now - timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    t0 = max(now - timedelta(minutes=30), week_start)

    def recent(minutes_ago: float) -> datetime:
        return t0 + (now - t0) * ((30 - minutes_ago) / 30)

    try:
        with session_scope(make_sessionmaker(engine)) as session:
            a = sites.create_site(
                session, slug=f"north-{tag}", name=f"North lab {tag}", protective_titre=40
            )
            b = sites.create_site(
                session, slug=f"south-{tag}", name=f"South lab {tag}", protective_titre=40
            )
            emails = {}
            for role, site_ids in (
                ("admin", []),
                ("manager", [a.id]),
                ("viewer", [a.id]),
                ("manager_b", [b.id]),
            ):
                email = f"{role.replace('_', '-')}-{tag}@example.test"
                users.create_user(
                    session,
                    email=email,
                    password=PASSWORD,
                    role=Role(role.split("_")[0]),
                    site_ids=site_ids,
                    full_name=role.replace("_", " ").title(),
                )
                emails[role] = email
            dev_a1 = devices.provision_device(session, site=a, slug="reader-1").device
            dev_a2 = devices.provision_device(session, site=a, slug="reader-2").device
            dev_b1 = devices.provision_device(session, site=b, slug="reader-1").device
            session.flush()
            seeded = Seeded(
                tag=tag,
                site_a=a.id,
                site_b=b.id,
                site_a_name=a.name,
                site_b_name=b.name,
                emails=emails,
                device_ids={"a1": dev_a1.id, "a2": dev_a2.id, "b1": dev_b1.id},
                sample_a=f"S-001-{tag}",
                sample_b=f"S-900-{tag}",
            )
            # The worked example on site A: two plates, the first with an annotated image.
            for i, endpoints in enumerate((PLATE_1, PLATE_2)):
                msg: RunMessage = run_message(
                    site=a.slug,
                    device=dev_a1.slug,
                    sample_number=seeded.sample_a,
                    endpoints=endpoints,
                    captured_at=recent(30 - i),
                    submission_number=f"SUB-{tag}",
                )
                if i == 0:
                    key = image_key(
                        site=a.slug, device=dev_a1.slug, run_id=str(msg.run_id), kind="annotated"
                    )
                    store.put(key, annotated_jpeg(endpoints))
                    msg = msg.model_copy(update={"images": (ImageRef(role="annotated", key=key),)})
                    seeded.run_with_image = msg.run_id
                results.upsert_run(session, msg, device=dev_a1)
                seeded.reads_a.append(
                    PlateRead(
                        run_id=msg.run_id,
                        sample_number=msg.sample_number,
                        plate_id=msg.plate_id,
                        read_at=msg.captured_at,
                        rows=msg.rows,
                    )
                )
            # A few weeks of history on both sites for the trend charts.
            for week in range(1, 6):
                for site, dev, base in ((a, dev_a2, 2), (b, dev_b1, 1)):
                    # Titres drift by site and week, so both charts have something to show.
                    ends = tuple(min(12, base + (week * 3 + r) % 5) for r in range(8))
                    msg = run_message(
                        site=site.slug,
                        device=dev.slug,
                        sample_number=f"H-{week}-{tag}",
                        endpoints=ends,
                        captured_at=now - timedelta(weeks=week, hours=1),
                    )
                    results.upsert_run(session, msg, device=dev)
            # A read the appliance's plate-quality gate held for review (counts nowhere).
            held = run_message(
                site=a.slug,
                device=dev_a1.slug,
                sample_number=f"S-REV-{tag}",
                captured_at=recent(10),
                review_reasons=("grid_misfit", "too_many_unread"),
            )
            results.upsert_run(session, held, device=dev_a1)
            seeded.held_run = held.run_id
            # Site B's own sample: a manager of site A must never see it.
            results.upsert_run(
                session,
                run_message(
                    site=b.slug,
                    device=dev_b1.slug,
                    sample_number=seeded.sample_b,
                    captured_at=recent(5),
                ),
                device=dev_b1,
            )
            # Status: a1 healthy, a2 offline by its last will with a backlog, b1 silent.
            results.record_device_status(
                session,
                _status(dev_a1, online=True, backlog=0, age=None, disk=40 * 1024**3),
                device=dev_a1,
            )
            results.record_device_status(
                session,
                _status(dev_a2, online=False, backlog=37, age=5400.0, disk=1024**3),
                device=dev_a2,
            )
    finally:
        engine.dispose()
    return seeded


def push_status(settings: CloudSettings, device_id: uuid.UUID, *, online: bool) -> None:
    """A later status message for one device, as the ingest worker would store it."""
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            device = session.get(Device, device_id)
            assert device is not None
            results.record_device_status(
                session,
                _status(device, online=online, backlog=0, age=None, disk=50 * 1024**3),
                device=device,
            )
    finally:
        engine.dispose()
