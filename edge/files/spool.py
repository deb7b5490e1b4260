"""The spool: an uploaded or captured plate is on disk before its ticket is handed out.

A plate held only in memory (queued, or being read) would be lost if the process died; so the
request and the image bytes are written as one file (`data_dir/spool/<ticket>.plate`: a length-
prefixed JSON header, then the image), atomically and fsynced, and removed once the plate reaches
a final state. On start every entry is queued again under its ticket id; a plate whose run was
already committed is recognised by its image sha256 and not counted twice. The folder source
needs no spool: its inbox is one.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.files.fsutil import atomic_write
from edge.schemas import RunRequest

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
SUFFIX = ".plate"


@dataclass
class SpoolEntry:
    ticket_id: str
    req: RunRequest
    filename: str
    source: str
    captured_at: datetime
    data: bytes


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, ticket_id: str) -> Path:
        return self.folder / f"{ticket_id}{SUFFIX}"

    def put(
        self,
        ticket_id: str,
        data: bytes,
        *,
        req: RunRequest,
        filename: str,
        source: str,
        captured_at: datetime,
    ) -> None:
        meta = json.dumps(
            {
                "req": req.model_dump(mode="json"),
                "filename": filename,
                "source": source,
                "captured_at": captured_at.isoformat(),
            }
        ).encode("utf-8")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(ticket_id), _HEADER.pack(len(meta)) + meta + data)

    def remove(self, ticket_id: str) -> None:
        self.path(ticket_id).unlink(missing_ok=True)

    def entries(self) -> list[SpoolEntry]:
        """Entries oldest first. Partial files are not entries: `Appliance.start` removes the
        leftovers of interrupted writes; one seen later may be a capture still being written."""
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime_ns):
            try:
                out.append(self._load(path))
            except (OSError, ValueError, KeyError, struct.error) as exc:
                # Only a damaged disk gets here (writes are atomic): keep the file for a person.
                logger.error("spool entry %s is unreadable (%s); set aside", path.name, exc)
                path.rename(path.with_suffix(".damaged"))
        return out

    def _load(self, path: Path) -> SpoolEntry:
        blob = path.read_bytes()
        (size,) = _HEADER.unpack_from(blob)
        meta = json.loads(blob[_HEADER.size : _HEADER.size + size])
        return SpoolEntry(
            ticket_id=path.stem,
            req=RunRequest.model_validate(meta["req"]),
            filename=str(meta["filename"]),
            source=str(meta["source"]),
            captured_at=datetime.fromisoformat(meta["captured_at"]),
            data=blob[_HEADER.size + size :],
        )
