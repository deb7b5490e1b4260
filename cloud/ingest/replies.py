"""What the ingest writes back: dead-letter rows and the devices' acks for one batch."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from cloud.ingest.models import DEAD_LETTER_KEEP_BYTES
from cloud.ingest.validate import Accepted, Outcome, Refused, sha256_hex
from core.wire import Ack

ReplyKey = tuple[str, str, str, int]  # (site, device, run_id, edit)


def clean_reason(reason: str) -> str:
    # A reason may quote hostile input; the ack's reason field refuses control characters.
    out = "".join(ch if unicodedata.category(ch) != "Cc" or ch in "\n\t" else "?" for ch in reason)
    return out[:2000] or "rejected"


def dead_letter_rows(refused: Sequence[Refused]) -> list[dict[str, Any]]:
    return [
        {
            "received_at": r.incoming.received_at,
            "topic": r.incoming.topic[:512],
            "site": r.site,
            "device": r.device,
            "run_id": r.run_id,
            "edit": r.edit,
            "reason": clean_reason(r.reason),
            # A valid message refused for an unexpected reason is kept whole, to replay.
            "payload": r.incoming.payload
            if r.keep_all
            else r.incoming.payload[:DEAD_LETTER_KEEP_BYTES],
            "payload_bytes": len(r.incoming.payload),
            "payload_sha256": sha256_hex(r.incoming.payload),
        }
        for r in refused
    ]


def device_replies(outcomes: Sequence[Outcome], refused: Sequence[Refused]) -> dict[ReplyKey, Ack]:
    """One ack per (site, device, run, edit): rejected when any copy was refused."""
    # Keyed by (site, device, run_id, edit): a duplicate of a refused message is refused too.
    rejected: dict[tuple[str, str, str, int], str] = {}
    for r in refused:
        if r.run_id is not None and r.edit is not None and r.device is not None:
            rejected.setdefault((r.site or "", r.device, str(r.run_id), r.edit), r.reason)
    replies: dict[tuple[str, str, str, int], Ack] = {}
    for key, reason in rejected.items():
        replies[key] = Ack(
            run_id=key[2], edit=key[3], status="rejected", reason=clean_reason(reason)
        )
    for outcome in outcomes:
        if not isinstance(outcome, Accepted):
            continue
        run_id = getattr(outcome.message, "run_id", None)
        edit = getattr(outcome.message, "edit", None)
        if run_id is None or edit is None:
            continue
        key = (outcome.device.site, outcome.device.slug, str(run_id), edit)
        if key not in replies:
            replies[key] = Ack(run_id=run_id, edit=edit, status="accepted")
    return replies
