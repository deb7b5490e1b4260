"""`microplate-cloud dataset export`: reviewed plates as a training set.

Only sites whose admin switched on "allow corrected plates for training" take part, and only
reads an operator reviewed (their calls are a person's, not the model's) that were not deleted
and whose raw photo is in object storage, under the run's own device prefix
(``{site}/{device}/{run_id}/raw.jpg``, the only key fetched).
The export directory holds:

- ``images/{run_id}.jpg``: the raw photo, byte for byte (sha256 in the manifest);
- ``labels/{run_id}.txt``: YOLO labels, one line per read well ``class cx cy w h`` (normalised
  to the photo), the class from the final call (``flowing`` 0, ``agglutinated`` 1,
  ``invalid`` 2; a well left ``unread`` has no line) and the box from the calibration grid's
  cell for that well (the box the appliance cut the well's crop from);
- ``data.yaml``: the class names, for YOLO trainers;
- ``manifest.json``: per plate the site, device, model (name, version, sha256), reading mode,
  who reviewed it and when, and which wells a person corrected (with the model's call); plus
  the reads left out and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import Device, Run, RunWell, Site

logger = logging.getLogger(__name__)

CLASSES = ("flowing", "agglutinated", "invalid")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}


class DatasetError(RuntimeError):
    """The export cannot go on (the message is safe to show)."""


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker; ValueError if it is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError("corrupt JPEG marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        i += 2 + length
    raise ValueError("no frame header in the JPEG")


def yolo_lines(wells: list[dict[str, Any]], width: int, height: int) -> list[str]:
    """One YOLO line per read well with a box; boxes are clipped to the photo."""
    out = []
    for w in wells:
        cls = CLASS_ID.get(str(w.get("state")))
        box = w.get("box")
        if cls is None or not box:
            continue
        x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
        x2, y2 = min(float(width), float(box[2])), min(float(height), float(box[3]))
        if x2 <= x1 or y2 <= y1:
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        bw, bh = (x2 - x1) / width, (y2 - y1) / height
        out.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return out


@dataclass
class ExportResult:
    plates: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    run_id: uuid.UUID
    site: str
    device: str
    read_at: datetime
    reviewed_at: datetime
    extra: dict[str, Any]
    image_keys: dict[str, str]
    n_rows: int
    n_cols: int


def candidates(session: Session, *, since: date) -> Iterator[_Candidate]:
    start = datetime.combine(since, datetime.min.time(), timezone.utc)
    query = (
        select(
            Run.run_id,
            Site.slug,
            Device.slug,
            Run.read_at,
            Run.reviewed_at,
            Run.extra,
            Run.image_keys,
            Run.n_rows,
            Run.n_cols,
        )
        .join(Site, Site.id == Run.site_id)
        .join(Device, Device.id == Run.device_id)
        .where(
            Site.allow_training.is_(True),
            Run.reviewed_at.is_not(None),
            Run.reviewed_at >= start,
            Run.status != "deleted",
        )
        .order_by(Run.reviewed_at, Run.run_id)
    )
    for row in session.execute(query):
        yield _Candidate(*row)


def export_dataset(
    session: Session,
    store: Any,
    *,
    since: date,
    out: Path,
    progress: Any = None,
) -> ExportResult:
    """Write the dataset under ``out`` (which must be empty or new); ``store`` is a
    `cloud.storage.ObjectStore`; ``progress(done, total)`` is called after each plate."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is not a directory; export into a new directory")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty; export into a new directory")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    result = ExportResult()
    found = list(candidates(session, since=since))
    for done, c in enumerate(found, start=1):
        # Only the run's own key is fetched, whatever key a stored row holds (rows from before
        # the ingest built the keys itself may name another site's photo).
        key = _raw_key(c) if "raw" in c.image_keys else None
        if not key:
            result.skipped.append({"run_id": str(c.run_id), "reason": "no raw photo uploaded"})
        else:
            _export_one(session, store, c, key, out, result)
        if progress is not None:
            progress(done, len(found))
    (out / "data.yaml").write_text(
        "path: .\ntrain: images\nval: images\n"
        + "names:\n"
        + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)),
        encoding="utf-8",
    )
    manifest = {
        "format": "yolo",
        "classes": list(CLASSES),
        "since": since.isoformat(),
        "exported_at": datetime.now(timezone.utc).isoformat(),
        "plates": result.plates,
        "skipped": result.skipped,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return result


def _raw_key(c: _Candidate) -> str | None:
    """Where this run's raw photo is uploaded (`cloud.storage.image_key`), None if its site or
    device slug could not make a key."""
    from cloud.storage import image_key

    try:
        return image_key(site=c.site, device=c.device, run_id=str(c.run_id), kind="raw")
    except ValueError:
        return None


def _export_one(
    session: Session, store: Any, c: _Candidate, key: str, out: Path, result: ExportResult
) -> None:
    try:
        data: bytes = store.get(key)
    except Exception as exc:  # noqa: BLE001 - any storage failure skips this plate, named
        logger.warning("dataset: raw photo of %s unreadable: %s", c.run_id, type(exc).__name__)
        result.skipped.append({"run_id": str(c.run_id), "reason": "raw photo missing in storage"})
        return
    try:
        width, height = jpeg_size(data)
    except (ValueError, struct.error):
        result.skipped.append({"run_id": str(c.run_id), "reason": "raw photo is not a JPEG"})
        return
    wells = session.scalar(select(RunWell.wells).where(RunWell.run_id == c.run_id)) or []
    lines = yolo_lines(wells, width, height)
    if not lines:
        result.skipped.append({"run_id": str(c.run_id), "reason": "no well box to label"})
        return
    name = str(c.run_id)
    (out / "images" / f"{name}.jpg").write_bytes(data)
    (out / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corrected = [
        {"well": w["well_id"], "model": w["model_state"], "final": w["state"]}
        for w in wells
        if w.get("model_state") is not None and w["model_state"] != w["state"]
    ]
    review = c.extra.get("review") or {}
    result.plates.append(
        {
            "run_id": name,
            "site": c.site,
            "device": c.device,
            "model": c.extra.get("model"),
            "reading": c.extra.get("reading"),
            "plate_format": c.n_rows * c.n_cols,
            "read_at": c.read_at.isoformat(),
            "reviewed_at": c.reviewed_at.isoformat(),
            "reviewed_by": review.get("by"),
            "image": f"images/{name}.jpg",
            "labels": f"labels/{name}.txt",
            "sha256": hashlib.sha256(data).hexdigest(),
            "width": width,
            "height": height,
            "wells_labelled": len(lines),
            "corrected_wells": corrected,
        }
    )


def run_dataset(settings: Any, args: Any) -> int:
    """The `dataset export` command: settings are `CloudSettings`, args from `cloud.cli`."""
    import sys

    from rich.progress import Progress

    from cloud.db import make_engine, make_sessionmaker
    from cloud.storage import ObjectStore, StorageError

    try:
        since = date.fromisoformat(args.since)
    except ValueError:
        print(f"error: --since {args.since!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    engine = make_engine(settings)
    try:
        store = ObjectStore(settings)
        with make_sessionmaker(engine)() as session, Progress(transient=True) as bar:
            task = bar.add_task("exporting reviewed plates", total=None)
            result = export_dataset(
                session,
                store,
                since=since,
                out=Path(args.out),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (DatasetError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the export directory: no permission, disk full
        print(f"error: cannot write the export under {args.out}: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(
        f"{len(result.plates)} plates exported to {args.out} "
        f"({len(result.skipped)} reviewed reads left out; see manifest.json)"
    )
    return 0
