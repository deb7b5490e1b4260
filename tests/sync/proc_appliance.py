"""A simulated appliance process: real edge store + outbox + SyncWorker, no camera or model.

It queues `--total` plate runs at `--rate` runs/s (and a `deleted` event for every
`--delete-every`-th run), then keeps syncing until it is stopped. Run ids are derived from
the device and the run's index, so the test knows exactly which runs must arrive, and a
restarted process (after SIGKILL) continues where its database says it stopped.

    MICROPLATE_PROC_PASSWORD=P python -m tests.sync.proc_appliance \
        --db D --site S --device D --port N ...

The device password comes from the environment, never argv: it stays out of `ps`, and a
generated one that starts with "-" cannot be taken for an option.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

NAMESPACE = uuid.UUID("6f1c2a52-5b7e-4d0e-9a51-3f1d2c4b5a69")


def run_uuid(site: str, device: str, index: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"run/{site}/{device}/{index}")


def plate_uuid(site: str, device: str, index: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"plate/{site}/{device}/{index}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--total", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--delete-every", type=int, default=0)
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--ack-timeout", type=float, default=5.0)
    p.add_argument("--no-sync", action="store_true", help="only queue runs (an outage)")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )

    from core.wire import encode_message
    from edge.db import outbox
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker
    from tests.sync.world import (
        PROC_PASSWORD_ENV,
        DeviceAccount,
        deletion,
        open_store,
        sync_settings,
        template_message,
    )

    acc = DeviceAccount(args.site, args.device, os.environ[PROC_PASSWORD_ENV])
    store = open_store(args.db)
    template = template_message(args.site, args.device)
    worker = None
    if not args.no_sync:
        settings = sync_settings(
            args.port,
            acc,
            window=args.window,
            ack_timeout_s=args.ack_timeout,
            ack_timeout_max_s=max(args.ack_timeout, 120.0),
        )
        worker = SyncWorker(
            settings, outbox=Outbox(store), site_id=args.site, device_id=args.device
        )
        worker.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    done = int(store.read().execute("SELECT count(*) FROM outbox WHERE kind = 'run'").fetchone()[0])
    step = max(1, int(args.rate / 10))
    next_at = time.monotonic()
    while done < args.total and not stop.is_set():
        n = min(step, args.total - done)
        with store.write() as db:
            for i in range(done, done + n):
                msg = template.model_copy(
                    update={
                        "run_id": run_uuid(args.site, args.device, i),
                        "plate_id": plate_uuid(args.site, args.device, i),
                        # About four plates per sample, each appliance its own samples.
                        "sample_number": f"{args.device}-S-{i // 4:05d}",
                    }
                )
                outbox.add(
                    db, run_id=str(msg.run_id), kind="run", payload=encode_message(msg).decode()
                )
                if args.delete_every and i % args.delete_every == 0:
                    ev = deletion(msg)
                    outbox.add(
                        db,
                        run_id=str(ev.run_id),
                        kind="deleted",
                        payload=encode_message(ev).decode(),
                    )
        done += n
        if worker is not None:
            worker.notify()
        next_at += n / args.rate
        stop.wait(max(0.0, next_at - time.monotonic()))
    print("generated", done, flush=True)
    stop.wait()
    if worker is not None:
        worker.stop()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
