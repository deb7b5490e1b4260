"""Turn one MQTT message into something to write, or a dead letter with a reason.

Pure apart from the device lookup (given as a callable): the topic must be a device topic,
the payload a valid `core.wire` message of a kind allowed on that topic, the device named in
the topic registered and active, and a run message must name the same site and device as its
topic (the broker ACL makes the topic trustworthy; the body is not). Values the database
columns cannot hold are refused here with a clear reason instead of failing a whole batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core.wire import (
    MAX_MESSAGE_BYTES,
    DeviceStatus,
    RunEvent,
    RunMessage,
    TopicError,
    Topics,
    WireError,
    parse_message,
)

logger = logging.getLogger(__name__)

# Column widths of the cloud's results tables (cloud.models.results).
_FLAG_MAX = 32
_CLASS_NAME_MAX = 32
_SUBMISSION_MAX = 64


class DeviceRef(Protocol):
    @property
    def id(self) -> uuid.UUID: ...

    @property
    def site_id(self) -> uuid.UUID: ...


@dataclass(frozen=True)
class KnownDevice:
    id: uuid.UUID
    site_id: uuid.UUID
    site: str
    slug: str


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    generation: int = 0
    qos: int = 1


@dataclass(frozen=True)
class Accepted:
    """A valid message from a registered device, ready for the writer."""

    incoming: Incoming
    device: KnownDevice
    message: RunMessage | RunEvent | DeviceStatus


@dataclass(frozen=True)
class Refused:
    """A message that goes to the dead-letter table (and, if it names a run, a rejected ack)."""

    incoming: Incoming
    reason: str
    site: str | None = None
    device: str | None = None
    run_id: uuid.UUID | None = None
    edit: int | None = None
    keep_all: bool = False  # keep the whole payload (not only the first 64 KiB)


Outcome = Accepted | Refused


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _guess_key(payload: bytes) -> tuple[uuid.UUID | None, int | None]:
    """Best effort (run_id, edit) of a message that failed validation, for the rejected ack."""
    if len(payload) > MAX_MESSAGE_BYTES:
        return None, None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    try:
        run_id = uuid.UUID(str(data.get("run_id")))
    except ValueError:
        return None, None
    edit = data.get("edit", 0)
    if isinstance(edit, bool) or not isinstance(edit, int) or not 0 <= edit < 2**31:
        return run_id, None
    return run_id, edit


_class_name = operator.attrgetter("class_name")


def _schema_fit(message: RunMessage) -> str | None:
    if message.submission_number and len(message.submission_number) > _SUBMISSION_MAX:
        return f"submission_number: longer than {_SUBMISSION_MAX} characters"
    for flag in message.flags:
        if len(flag) > _FLAG_MAX:
            return f"flags: {flag[:40]!r} is longer than {_FLAG_MAX} characters"
    names = list(map(_class_name, message.wells.values()))  # C-level loop over 96 wells
    if max(map(len, filter(None, names)), default=0) > _CLASS_NAME_MAX:
        for well_id, name in zip(message.wells, names, strict=True):
            if name and len(name) > _CLASS_NAME_MAX:
                return f"wells.{well_id}.class_name: longer than {_CLASS_NAME_MAX} characters"
    return None


def classify(incoming: Incoming, lookup: Any) -> Outcome:
    """`lookup(site, device) -> KnownDevice | None` (registered and not revoked)."""
    try:
        site, device, leaf = Topics.parse(incoming.topic)
    except TopicError as exc:
        return Refused(incoming, f"topic: {exc}")
    if leaf not in ("runs", "status"):
        return Refused(incoming, f"topic: devices do not publish on {leaf!r}", site, device)
    try:
        message = parse_message(incoming.payload)
    except WireError as exc:
        run_id, edit = _guess_key(incoming.payload)
        return Refused(incoming, str(exc)[:2000], site, device, run_id, edit)
    run_id = getattr(message, "run_id", None)
    edit = getattr(message, "edit", None)
    known = lookup(site, device)
    if known is None:
        return Refused(incoming, "device: not registered or revoked", site, device, run_id, edit)
    if leaf == "status":
        if not isinstance(message, DeviceStatus):
            return Refused(incoming, f"kind: {message.kind!r} is not a status", site, device)
        if (message.site_id, message.device_id) != (site, device):
            return Refused(incoming, "device_id: does not match the topic", site, device)
        return Accepted(incoming, known, message)
    if isinstance(message, RunMessage):
        if (message.site_id, message.device_id) != (site, device):
            return Refused(
                incoming,
                "device_id/site_id: the message names another device than its topic",
                site,
                device,
                run_id,
                edit,
            )
        problem = _schema_fit(message)
        if problem is not None:
            return Refused(incoming, problem, site, device, run_id, edit)
        return Accepted(incoming, known, message)
    if isinstance(message, RunEvent):
        return Accepted(incoming, known, message)
    return Refused(
        incoming, f"kind: {message.kind!r} is not accepted on runs", site, device, run_id, edit
    )
