"""The appliance's own writer, driven fast: one plate per SQLite transaction (`edge.db.store`).

Run as ``python -m tests.ops.sqlite_writer DB PLATES_PER_SECOND``; it writes until killed, or
until SIGTERM, which finishes the plate being written and closes the store (a clean stop). Each
plate goes through the real store (migrations, WAL, one writer, `BEGIN IMMEDIATE`) and
`edge.db.runs.insert_run` (run + 96 wells + 8 rows + the outbox entry), exactly as the pipeline
stores a read; only the image and detector are skipped. The plate's sequence number is kept in
`description` so the drill test can check that a restored copy is a gap-free prefix.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.plate import PLATE_96
from core.stats import compute_statistics, distribution
from core.titre import row_results
from core.wells import call_wells
from edge.db.runs import RunRecord, insert_run
from edge.db.store import Store

WELLS_PER_PLATE = 96
ROWS_PER_PLATE = 8


def template_plate() -> tuple[dict, list, dict[str, int], object]:  # type: ignore[type-arg]
    """Well calls, rows, distribution and statistics of one plausible plate (endpoint 6)."""
    grid = CalibrationGrid.uniform(1200, 800, PLATE_96)
    detections = []
    for row in range(PLATE_96.rows):
        for col in range(PLATE_96.cols):
            x1, y1, x2, y2 = grid.cell_box(row, col)
            name = "flowing" if col < 6 else "agglutinated"
            detections.append(Detection(x1=x1 + 5, y1=y1 + 5, x2=x2 - 5, y2=y2 - 5,
                                        confidence=0.9, class_id=0 if col < 6 else 1,
                                        class_name=name))  # fmt: skip
    wells = call_wells(detections, grid)
    rows = row_results(wells, PLATE_96)
    return wells, rows, distribution(rows, PLATE_96.cols), compute_statistics(rows)


def write_plate(store: Store, seq: int, plate: tuple) -> str:  # type: ignore[type-arg]
    wells, rows, dist, stats = plate
    run_id = str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    rec = RunRecord(
        run_id=run_id, plate_id=str(uuid.uuid4()), sample_number="S-1", submission_number="",
        description=str(seq), operator="drill", source="test", filename=f"{seq}.jpg",
        image_sha256=uuid.uuid4().hex, captured_at=now, processed_at=now, supersedes=None,
        model={"name": "drill", "version": "0", "sha256": "0"}, calibration_id=None,
        dilution={"start_dilution": 10, "factor": 2}, timings_ms={}, image_dir="", image_bytes=0,
    )  # fmt: skip
    with store.write() as db:
        insert_run(db, rec, wells=wells, rows=rows, distribution=dist, statistics=stats,
                   message_json=f'{{"run_id":"{run_id}"}}', superseded_events={})  # fmt: skip
    return run_id


def main() -> int:
    path, rate = Path(sys.argv[1]), float(sys.argv[2])
    store = Store(path)
    store.open()
    store.migrate()
    plate = template_plate()
    with store.write() as db:
        (count,) = db.execute("SELECT count(*) FROM runs").fetchone()
    seq = int(count)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    print("ready", flush=True)
    while not stopping:
        seq += 1
        write_plate(store, seq, plate)
        time.sleep(1.0 / rate)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
