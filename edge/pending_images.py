"""Display images (annotated, thumbnail) committed with their run in `pending_images` and
written into the run's folder afterwards: by the pipeline's background writer, by
`Appliance.start` after a crash, or on demand when one is asked for."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge.db import runs
from edge.files import images

if TYPE_CHECKING:
    from edge.db.store import Store

logger = logging.getLogger(__name__)

# One writer at a time (background writer, start, a reader asking for an image).
_LOCK = threading.Lock()


def flush(store: Store, images_dir: Path, run_id: str | None = None) -> int:
    """Write one run's pending images (or all) and drop them from the database; returns the
    number of runs written."""
    with _LOCK:
        rows = runs.pending_images(store.read(), run_id)
        by_run: dict[str, tuple[str, dict[str, bytes]]] = {}
        for rid, image_dir, name, data in rows:
            by_run.setdefault(rid, (image_dir, {}))[1][name] = data
        for rid, (image_dir, files) in by_run.items():
            folder = images_dir / image_dir
            if folder.is_dir():
                images.write_derived(folder, files)
            else:  # retention removed the run's images meanwhile
                logger.info("images of run %s are gone; its pending ones are dropped", rid)
            # Not durable: if this is lost, the same files are written again on start.
            with store.write(durable=False) as wdb:
                runs.drop_pending_images(wdb, rid)
    return len(by_run)
