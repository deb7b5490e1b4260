from __future__ import annotations

from pathlib import Path

from edge.db import outbox
from edge.db.store import Store


def test_pending_delivered_rejected_backlog(tmp_path: Path) -> None:
    s = Store(tmp_path / "m.db")
    s.open()
    s.migrate()
    assert outbox.backlog(s) == (0, None)
    with s.write() as db:
        ids = [
            outbox.add(db, run_id=f"r{i}", kind="run", payload=f'{{"i": {i}}}') for i in range(3)
        ]
    count, age = outbox.backlog(s)
    assert count == 3 and age is not None and age >= 0
    assert [e.payload["i"] for e in outbox.pending(s, 2)] == [0, 1]
    assert outbox.mark_delivered(s, [ids[0]]) == 1
    assert outbox.mark_delivered(s, [ids[0]]) == 0  # a duplicate ack is harmless
    outbox.mark_rejected(s, ids[1], "schema too new")
    assert [e.id for e in outbox.pending(s)] == [ids[2]]
    assert outbox.backlog(s)[0] == 1 and outbox.rejected_count(s) == 1
    outbox.mark_attempt(s, ids[2], "broker down")
    entry = outbox.pending(s)[0]
    assert entry.attempts == 1 and entry.last_error == "broker down"
    s.close()
