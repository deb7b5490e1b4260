"""Building blocks shared by the sync tests and `bench/sync.py`.

- plate run messages (valid `core.wire.RunMessage`s, built once and copied with new ids);
- a cloud database with sites and devices registered (through the cloud's own models);
- broker accounts and the ACL the cloud generates (`cloud.mqtt_auth.render_acl_file`);
- a simulated appliance: a real edge `Store` + outbox + `SyncWorker`, no detector.
"""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from core.plate import PLATE_96
from core.titre import DilutionSettings, row_results
from core.wells import WellCall
from core.wire import RunEvent, RunMessage, build_run_message, encode_message

INGEST_USER = "microplate-ingest"
# Where the test processes (proc_appliance, proc_ingest) read their broker password: never
# argv, so it stays out of `ps` and one starting with "-" is not taken for an option.
PROC_PASSWORD_ENV = "MICROPLATE_PROC_PASSWORD"


@dataclass(frozen=True)
class DeviceAccount:
    site: str
    device: str
    password: str

    @property
    def username(self) -> str:
        return f"{self.site}.{self.device}"


def accounts(n_sites: int, per_site: int) -> list[DeviceAccount]:
    # The first password always starts with "-", as one of token_urlsafe's does now and then
    # (1 in 64): once it was passed as an argument and the appliance's argparse took it
    # for an option, so that appliance never started (chaos test: 5 passwords, 1 run in 13).
    return [
        DeviceAccount(
            f"site-{s}", f"dev-{d}", ("-" if s == d == 0 else "") + secrets.token_urlsafe(12)
        )
        for s in range(n_sites)
        for d in range(per_site)
    ]


def acl_text(devices: list[DeviceAccount]) -> str:
    from cloud.mqtt_auth import BrokerAccount, render_acl_file

    return render_acl_file(
        [BrokerAccount(a.username, "", a.site, a.device) for a in devices],
        ingest_username=INGEST_USER,
    )


def template_message(site: str, device: str, endpoints: list[int] | None = None) -> RunMessage:
    ends = endpoints or [5, 6, 5, 7, 4, 6, 5, 8]
    calls = {}
    for r in range(8):
        for c in range(12):
            wid = PLATE_96.well_id(r, c)
            state = "flowing" if c < ends[r] else "agglutinated"
            calls[wid] = WellCall(
                well_id=wid,
                row=r,
                col=c,
                state=state,
                confidence=0.91,
                box=(10.0 * c, 10.0 * r, 10.0 * c + 8, 10.0 * r + 8),
                class_name=state,
            )
    dilution = DilutionSettings()
    rows = row_results(calls, PLATE_96, dilution=dilution)
    now = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
    return build_run_message(
        calls=calls,
        rows=rows,
        run_id=uuid.uuid4(),
        plate_id=uuid.uuid4(),
        edit=0,
        device_id=device,
        site_id=site,
        sample_number="S-000",
        captured_at=now,
        processed_at=now,
        model={"name": "hi-yolo", "version": "1", "sha256": "a" * 64},
        calibration_id="grid-1",
        plate_format=96,
        dilution=dilution,
    )


def new_run(template: RunMessage, sample_number: str, *, seq: int = 0) -> RunMessage:
    """A copy of `template` with fresh ids (no re-validation: the template is valid)."""
    at = template.processed_at + timedelta(milliseconds=seq)
    return template.model_copy(
        update={
            "run_id": uuid.uuid4(),
            "plate_id": uuid.uuid4(),
            "sample_number": sample_number,
            "processed_at": at,
            "captured_at": at,
        }
    )


def deletion(run: RunMessage, edit: int = 1) -> RunEvent:
    return RunEvent(
        kind="deleted",
        run_id=run.run_id,
        edit=edit,
        at=datetime.now(timezone.utc),
        reason="test deletion",
    )


# -- cloud database ----------------------------------------------------------------------------
def register_devices(database_url: str, devices: list[DeviceAccount]) -> None:
    """Sites and active devices, as the cloud's provisioning would leave them."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from cloud.models import Device, Site
    from cloud.mqtt_auth import hash_mqtt_password

    engine = create_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            sites: dict[str, Site] = {}
            for acc in devices:
                if acc.site not in sites:
                    sites[acc.site] = Site(slug=acc.site, name=acc.site)
                    session.add(sites[acc.site])
            session.flush()
            for acc in devices:
                session.add(
                    Device(
                        site_id=sites[acc.site].id,
                        slug=acc.device,
                        name=acc.device,
                        mqtt_username=acc.username,
                        mqtt_password_hash=hash_mqtt_password(acc.password),
                        api_token_digest="0" * 64,
                        status="active",
                    )
                )
    finally:
        engine.dispose()


# -- simulated appliance -----------------------------------------------------------------------
def open_store(path: Path):  # type: ignore[no-untyped-def]
    from edge.db.store import Store

    store = Store(path)
    store.open()
    store.migrate()
    return store


def queue_runs(store, messages: list[RunMessage]) -> None:  # type: ignore[no-untyped-def]
    """Outbox entries for `messages` (one transaction), as the pipeline would add them."""
    from edge.db import outbox

    with store.write() as db:
        for msg in messages:
            outbox.add(db, run_id=str(msg.run_id), kind="run", payload=encode_message(msg).decode())


def queue_events(store, events: list[RunEvent]) -> None:  # type: ignore[no-untyped-def]
    from edge.db import outbox

    with store.write() as db:
        for ev in events:
            outbox.add(db, run_id=str(ev.run_id), kind=ev.kind, payload=encode_message(ev).decode())


def sync_settings(port: int, acc: DeviceAccount, **overrides: object):  # type: ignore[no-untyped-def]
    from edge.sync import SyncSettings

    values: dict[str, object] = {
        "broker_url": f"mqtt://127.0.0.1:{port}",
        "username": acc.username,
        "password": acc.password,
        "window": 200,
        "ack_timeout_s": 5.0,
        "ack_timeout_max_s": 20.0,
        "reconnect_min_s": 1,
        "reconnect_max_s": 2,
        "status_interval_s": 2.0,
        "poll_s": 0.1,
        **overrides,
    }
    return SyncSettings.model_validate(values)


def random_sample(rng: random.Random, n: int) -> str:
    return f"S-{rng.randrange(n):05d}"
