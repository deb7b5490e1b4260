"""An ingest worker process for the chaos test and the bench (`run_ingest`, as the CLI does).

MICROPLATE_PROC_PASSWORD=P python -m tests.sync.proc_ingest --db URL --port N --client-id ID

The password comes from the environment, never argv: it stays out of `ps`, and a generated
one that starts with "-" cannot be taken for an option.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--batch-wait", type=float, default=0.05)
    p.add_argument("--stats-every", type=float, default=5.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from cloud.ingest import run_ingest
    from cloud.settings import CloudSettings
    from tests.sync.world import PROC_PASSWORD_ENV

    settings = CloudSettings(
        database_url=args.db,
        mqtt_broker_url=f"mqtt://127.0.0.1:{args.port}",
        mqtt_ingest_password=os.environ[PROC_PASSWORD_ENV],
    )
    return run_ingest(
        settings,
        argparse.Namespace(
            batch_size=args.batch_size,
            batch_wait=args.batch_wait,
            client_id=args.client_id,
            share_group="ingest",
            stats_every=args.stats_every,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
