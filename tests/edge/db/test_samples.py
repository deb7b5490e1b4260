"""The samples aggregate's reads (edge.db.samples): every read's rows in one query, each
distinct stored row validated once, and the pooled summary exactly what `core.pooling` gives
over the rows as they were stored."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from core.plate import PLATE_96
from core.pooling import PlateRead, pool_sample
from core.stats import compute_statistics, distribution
from core.titre import RowResult
from edge.db import runs, samples
from edge.db.store import Store

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def _rows(endpoints: list[int], *, unread: int | None = None) -> list[RowResult]:
    out = []
    for i, end in enumerate(endpoints):
        titre = 10 * 2 ** (end - 1) if end else None
        if i == unread:
            out.append(
                RowResult(row=i, label="ABCDEFGH"[i], endpoint=end, titre=titre,
                          flags=("unread",), counted=False, exclusion_reason="unread")
            )  # fmt: skip
        elif end == 0:
            out.append(
                RowResult(row=i, label="ABCDEFGH"[i], endpoint=0, flags=("no_inhibition",),
                          counted=True, counted_titre=5.0)
            )  # fmt: skip
        else:
            out.append(
                RowResult(row=i, label="ABCDEFGH"[i], endpoint=end, titre=titre, counted=True,
                          counted_titre=float(titre or 0))
            )  # fmt: skip
    return out


def _insert(
    store: Store,
    sample: str,
    rows: list[RowResult],
    *,
    plate_id: str | None = None,
    minutes: int = 0,
    needs_review: bool = False,
) -> tuple[str, str]:
    run_id, plate_id = str(uuid.uuid4()), plate_id or str(uuid.uuid4())
    at = T0 + timedelta(minutes=minutes)
    rec = runs.RunRecord(
        run_id=run_id, plate_id=plate_id, sample_number=sample, submission_number="",
        description="", operator="t", source="test", filename="p.jpg",
        image_sha256=uuid.uuid4().hex, captured_at=at, processed_at=at, supersedes=None,
        model={"name": "t", "version": "0", "sha256": "0"}, calibration_id=None,
        dilution={"start_dilution": 10, "factor": 2}, timings_ms={}, image_dir=run_id,
        image_bytes=0, needs_review=needs_review,
    )  # fmt: skip
    with store.write() as db:
        runs.insert_run(db, rec, wells={}, rows=rows, distribution=distribution(rows, 12),
                        statistics=compute_statistics(rows), message_json="{}",
                        superseded_events={})  # fmt: skip
    return run_id, plate_id


def test_reads_carry_each_runs_own_rows_in_row_order(store: Store) -> None:
    first = _rows([3, 4, 0, 5, 12, 6, 2, 1], unread=5)
    second = _rows([7, 7, 7, 1, 2, 3, 4, 5])
    held = _rows([1, 1, 1, 1, 1, 1, 1, 1])
    a, pa = _insert(store, "S-1", first, minutes=1)
    b, pb = _insert(store, "S-1", second, minutes=2)
    _insert(store, "S-1", held, minutes=3, needs_review=True)
    reads = {str(r.run_id): r for r in samples.sample_reads(store.read(), "S-1")}
    # The held run is not part of the sample; the others have their rows, validated, in order.
    assert set(reads) == {a, b}
    assert list(reads[a].rows) == first and list(reads[b].rows) == second
    assert all(type(row) is RowResult for r in reads.values() for row in r.rows)
    assert str(reads[a].plate_id) == pa and reads[b].read_at == T0 + timedelta(minutes=2)
    assert str(reads[b].plate_id) == pb


def test_recomputed_summary_is_pool_sample_over_the_stored_rows(store: Store) -> None:
    plates = [
        _rows([3, 4, 0, 5, 12, 6, 2, 1], unread=5),
        _rows([7, 7, 7, 1, 2, 3, 4, 5]),
        _rows([2, 2, 3, 3, 4, 4, 0, 0], unread=0),
    ]
    expected_reads = []
    for i, rows in enumerate(plates):
        run_id, plate_id = _insert(store, "S-2", rows, minutes=i)
        expected_reads.append(
            PlateRead(run_id=uuid.UUID(run_id), sample_number="S-2",
                      plate_id=uuid.UUID(plate_id), read_at=T0 + timedelta(minutes=i),
                      rows=tuple(rows))
        )  # fmt: skip
    # A re-read of the first plate under another sample supersedes it and moves it out of S-2.
    moved, _ = _insert(store, "S-3", plates[0], plate_id=str(expected_reads[0].plate_id), minutes=9)
    with store.write() as db:
        db.execute(
            "UPDATE runs SET superseded_by = ? WHERE run_id = ?",
            [moved, str(expected_reads[0].run_id)],
        )
        summary = samples.recompute_sample(db, "S-2", n_cols=12, protective_titre=40.0)
    want = pool_sample(
        "S-2",
        [
            expected_reads[0].model_copy(update={"superseded_by": uuid.UUID(moved)}),
            *expected_reads[1:],
        ],
        n_cols=PLATE_96.cols,
        protective_titre=40.0,
    )
    assert summary.statistics == want.statistics and summary.distribution == want.distribution
    assert summary.plates == 2 and summary.rows_total == 16
    assert summary.statistics.excluded == {"unread": 1}


def test_samples_of_plates_names_every_sample_holding_a_read(store: Store) -> None:
    _, plate = _insert(store, "S-4", _rows([1] * 8))
    _insert(store, "S-5", _rows([2] * 8), plate_id=plate, minutes=1)
    _insert(store, "S-6", _rows([3] * 8))
    assert samples.samples_of_plates(store.read(), [plate]) == {"S-4", "S-5"}
    assert samples.samples_of_plates(store.read(), []) == set()


def test_a_stored_row_is_validated_once_per_distinct_text() -> None:
    text = _rows([4])[0].model_dump_json()
    first = samples.stored_row(text)
    assert first == RowResult.model_validate_json(text)
    assert samples.stored_row(str(text.encode().decode())) is first  # equal text, same row
    # Still validated: a row that says two different things is refused, not cached as good.
    bad = text.replace('"counted":true', '"counted":false')
    with pytest.raises(ValidationError):
        samples.stored_row(bad)
