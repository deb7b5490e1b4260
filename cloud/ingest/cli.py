"""The `ingest` subcommand: `add_parser(subparsers)` and `run_ingest(settings, args)`.

`cloud/cli.py` registers the parser and, for `ingest`, calls `run_ingest(settings, args)` after
settings and logging are loaded.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
import time
from types import FrameType

from cloud.ingest.metrics import serve_metrics
from cloud.ingest.options import IngestOptions
from cloud.ingest.worker import IngestWorker
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "ingest",
        help="run the MQTT ingest worker (several may run at once: shared subscription)",
    )
    defaults = IngestOptions()
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--batch-wait", type=float, default=defaults.batch_wait_s)
    parser.add_argument(
        "--client-id",
        default=None,
        help="stable MQTT client id of this worker (default: ingest user + host name); "
        "give each worker on one host its own",
    )
    parser.add_argument(
        "--share-group",
        default=defaults.share_group,
        help="shared subscription group (default: a secret derived from the ingest password)",
    )
    parser.add_argument(
        "--receive-max",
        type=int,
        default=defaults.receive_max,
        help="unacknowledged messages the broker may push to this worker",
    )
    parser.add_argument(
        "--session-expiry",
        type=int,
        default=defaults.session_expiry_s,
        help="seconds the broker keeps this worker's session after a crash (messages wait for "
        "it meanwhile; a clean stop ends the session at once)",
    )
    parser.add_argument("--stats-every", type=float, default=60.0, help="seconds between stats")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics on 127.0.0.1 at this port (0: off)",
    )
    parser.add_argument(
        "--metrics-port-offset",
        type=int,
        default=0,
        help="added to --metrics-port (the systemd instance number, one port per worker)",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> IngestOptions:
    if args.client_id is not None and "." in args.client_id:
        raise ValueError("--client-id must not contain a dot (dotted ids belong to devices)")
    if args.batch_size < 1 or args.batch_size > 5000:
        raise ValueError("--batch-size must be between 1 and 5000")
    if not 20 <= getattr(args, "receive_max", 10_000) <= 65535:
        raise ValueError("--receive-max must be between 20 and 65535")
    if not 0 <= args.batch_wait <= 5:
        raise ValueError("--batch-wait must be between 0 and 5 seconds")
    expiry = getattr(args, "session_expiry", IngestOptions().session_expiry_s)
    if not 0 <= expiry <= 86_400:
        raise ValueError("--session-expiry must be between 0 and 86400 seconds")
    if getattr(args, "metrics_port", 0) and not 1 <= metrics_port(args) <= 65535:
        raise ValueError("--metrics-port plus --metrics-port-offset must be between 1 and 65535")
    return IngestOptions(
        batch_size=args.batch_size,
        batch_wait_s=args.batch_wait,
        client_id=args.client_id,
        share_group=args.share_group,
        receive_max=getattr(args, "receive_max", IngestOptions().receive_max),
        session_expiry_s=expiry,
    )


def metrics_port(args: argparse.Namespace) -> int:
    """The worker's metrics port, 0 when metrics are off."""
    base = int(getattr(args, "metrics_port", 0) or 0)
    return base + int(getattr(args, "metrics_port_offset", 0) or 0) if base else 0


def run_ingest(settings: CloudSettings, args: argparse.Namespace | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    if settings.mqtt_ingest_password is None:
        print("error: set MICROPLATE_CLOUD_MQTT_INGEST_PASSWORD (or its secret file) first")
        return 2
    try:
        options = options_from_args(args) if args is not None else IngestOptions()
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    stats_every = getattr(args, "stats_every", 60.0) if args is not None else 60.0
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker = IngestWorker(settings, options)
    # Each batch allocates hundreds of thousands of short-lived objects (96 wells per run)
    # that reference counting frees; the default cyclic-GC thresholds would rescan the
    # long-lived heap over and over (a fifth of the worker's time in the bench).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    port = metrics_port(args) if args is not None else 0
    if port:
        try:
            serve_metrics(worker, port=port)
        except OSError as exc:
            print(f"error: cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}")
            worker.engine.dispose()
            return 2
    worker.start()
    logger.info("ingest worker started (batch %d)", options.batch_size)
    last = time.monotonic()
    while not stop.wait(1.0):
        if time.monotonic() - last >= stats_every:
            last = time.monotonic()
            s = worker.stats
            logger.info(
                "ingest: %d received, %d runs written, %d events, %d dead letters, %d acks",
                s.received,
                s.runs_written,
                s.events_applied,
                s.dead_letters,
                s.acks_sent,
            )
    worker.stop()
    worker.engine.dispose()
    logger.info("ingest worker stopped")
    return 0
