from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from core.pooling import PlateRead, affected_samples, current_reads, pool_sample
from core.stats import compute_statistics
from tests.core.helpers import endpoint_pattern, rows_for

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)


def read(
    endpoints: list[int | None],
    *,
    sample: str = "S-001",
    plate: uuid.UUID | None = None,
    minutes: int = 0,
    **extra: object,
) -> PlateRead:
    return PlateRead(
        run_id=uuid.uuid4(),
        sample_number=sample,
        plate_id=plate or uuid.uuid4(),
        read_at=T0 + timedelta(minutes=minutes),
        rows=tuple(rows_for([endpoint_pattern(e) for e in endpoints])),
        **extra,  # type: ignore[arg-type]
    )


def test_two_plates_sum() -> None:
    a = read([5, 6, 5, 7, 4, 6, 5, None])
    b = read([6, 6, 5, 5, 7, 8, 6, 6], minutes=5)
    summary = pool_sample("S-001", [b, a], n_cols=12)
    assert summary.plates == 2 and summary.run_ids == (a.run_id, b.run_id)
    assert summary.rows_total == 16 and summary.statistics.n == 16
    expected = {"0": 1, "4": 1, "5": 5, "6": 6, "7": 2, "8": 1}
    assert summary.distribution == {str(c): expected.get(str(c), 0) for c in range(13)}
    assert summary.n_cols == 12


def test_re_read_supersedes_never_adds() -> None:
    plate = uuid.uuid4()
    first = read([2] * 8, plate=plate)
    again = read([3] * 8, plate=plate, minutes=10)
    summary = pool_sample("S-001", [again, first], n_cols=12)
    assert summary.run_ids == (again.run_id,) and summary.plates == 1
    assert summary.distribution["3"] == 8 and summary.distribution["2"] == 0


def test_deleted_and_marked_superseded_reads_do_not_count() -> None:
    plate = uuid.uuid4()
    first = read([2] * 8, plate=plate)
    deleted_re_read = read([3] * 8, plate=plate, minutes=10, deleted=True)
    assert current_reads([first, deleted_re_read]) == [first]
    other = read([4] * 8)
    marked = read([5] * 8, superseded_by=other.run_id)
    summary = pool_sample("S-001", [first, deleted_re_read, other, marked], n_cols=12)
    assert set(summary.run_ids) == {first.run_id, other.run_id}


def test_re_read_under_a_corrected_sample_number_moves_the_plate() -> None:
    plate = uuid.uuid4()
    wrong = read([2] * 8, plate=plate, sample="S-00l")
    fixed = read([2] * 8, plate=plate, sample="S-001", minutes=3)
    assert pool_sample("S-00l", [wrong, fixed], n_cols=12).plates == 0
    assert pool_sample("S-001", [wrong, fixed], n_cols=12).plates == 1


def test_empty_sample() -> None:
    summary = pool_sample("S-404", [read([1] * 8)], n_cols=12)
    assert summary.plates == 0 and summary.statistics.n == 0 and summary.statistics.gmt is None
    assert sum(summary.distribution.values()) == 0


PLATES = [uuid.UUID(int=i + 1) for i in range(4)]
read_specs = st.lists(
    st.tuples(
        st.sampled_from(PLATES),
        st.integers(0, 5),  # minutes after T0 (equal times happen)
        st.lists(st.one_of(st.none(), st.integers(1, 12)), min_size=8, max_size=8),
        st.sampled_from(["S-001", "S-002"]),
        st.booleans(),  # deleted
    ),
    max_size=10,
)


@settings(max_examples=200, deadline=None)
@given(specs=read_specs, seed=st.integers(0, 2**16))
def test_pooling_is_order_independent_and_counts_each_plate_once(specs, seed: int) -> None:
    reads = [
        PlateRead(
            run_id=uuid.UUID(int=1000 + i),
            sample_number=sample,
            plate_id=plate,
            read_at=T0 + timedelta(minutes=minutes),
            rows=tuple(rows_for([endpoint_pattern(e) for e in endpoints])),
            deleted=deleted,
        )
        for i, (plate, minutes, endpoints, sample, deleted) in enumerate(specs)
    ]
    shuffled = list(reads)
    random.Random(seed).shuffle(shuffled)
    for sample in ("S-001", "S-002"):
        a = pool_sample(sample, reads, n_cols=12)
        b = pool_sample(sample, shuffled, n_cols=12)
        assert a == b
        # never more than one read per physical plate, and never a deleted one
        assert len(set(a.plate_ids)) == len(a.plate_ids) == a.plates
        chosen = [r for r in reads if r.run_id in a.run_ids]
        assert not any(r.deleted for r in chosen)
        # each chosen read is the newest live read of its plate
        for r in chosen:
            live = [x for x in reads if x.plate_id == r.plate_id and not x.deleted]
            assert r == max(live, key=lambda x: (x.read_at, str(x.run_id)))
        rows = [row for r in chosen for row in r.rows]
        assert a.rows_total == len(rows) == 8 * a.plates
        assert a.statistics == compute_statistics(rows)
        assert sum(a.distribution.values()) == a.statistics.n
    # pooling over all samples covers every live plate exactly once
    live_plates = {r.plate_id for r in current_reads(reads)}
    both = (
        pool_sample("S-001", reads, n_cols=12).plates
        + pool_sample("S-002", reads, n_cols=12).plates
    )
    assert both == len(live_plates)


def test_a_device_never_replaces_another_devices_plate() -> None:
    plate = uuid.uuid4()  # same plate_id (same image bytes) read by two appliances
    mine = read([5] * 8, plate=plate, device="dev-a")
    copied = read([2] * 8, plate=plate, device="dev-b", minutes=10, sample="S-002")
    assert mine.plate_key != copied.plate_key
    assert pool_sample("S-001", [mine, copied], n_cols=12).run_ids == (mine.run_id,)
    assert pool_sample("S-002", [mine, copied], n_cols=12).run_ids == (copied.run_id,)
    again = read([6] * 8, plate=plate, device="dev-a", minutes=20)
    assert pool_sample("S-001", [mine, copied, again], n_cols=12).run_ids == (again.run_id,)


def test_a_held_read_hides_the_older_read_but_does_not_count() -> None:
    plate = uuid.uuid4()
    first = read([4] * 8, plate=plate)
    doubtful = read([6] * 8, plate=plate, minutes=5, held="needs_review")
    other = read([5] * 8, minutes=1)
    summary = pool_sample("S-001", [first, doubtful, other], n_cols=12)
    assert summary.run_ids == (other.run_id,) and summary.held_run_ids == (doubtful.run_id,)
    assert summary.plates == 1 and summary.statistics.n == 8
    assert summary.distribution["4"] == 0 and summary.distribution["6"] == 0


def test_affected_samples_are_every_sample_holding_the_plate() -> None:
    plate = uuid.uuid4()
    old = read([4] * 8, plate=plate, sample="S1", superseded_by=uuid.uuid4())
    moved = read([4] * 8, plate=plate, sample="S2", minutes=5)
    elsewhere = read([4] * 8, plate=plate, sample="S3", device="dev-b")
    unrelated = read([4] * 8, sample="S4")
    reads = [old, moved, elsewhere, unrelated]
    assert affected_samples(reads, [moved.plate_key]) == {"S1", "S2"}
    assert affected_samples(reads, [elsewhere.plate_key, unrelated.plate_key]) == {"S3", "S4"}
