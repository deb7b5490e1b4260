"""The LabWare share: atomic CSVs, never outside the share, leftovers cleaned on start."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path
from uuid import uuid4

import pytest

from core.pooling import PlateRead, pool_sample
from core.titre import RowResult
from edge.files import fsutil
from edge.files.share import ShareError, target_path, write_sample_csv

WHEN = datetime(2026, 11, 26, 9, 30, 0, 123000, tzinfo=timezone.utc)


def summary(sample: str = "S-001", plates: int = 1):  # type: ignore[no-untyped-def]
    rows = tuple(
        RowResult(
            row=i, label="ABCDEFGH"[i], endpoint=5, titre=160, counted=True, counted_titre=160.0
        )
        for i in range(8)
    )
    read = PlateRead(
        run_id=uuid4(), sample_number=sample, plate_id=uuid4(), read_at=WHEN, rows=rows
    )
    return pool_sample(sample, [read][:plates], n_cols=12)


def test_csv_is_written_atomically_inside_the_share(tmp_path: Path) -> None:
    share = tmp_path / "share"
    with pytest.raises(ShareError, match="not available"):  # an unmounted share is not created
        write_sample_csv(share, summary(), template="labware", when=WHEN)
    assert not share.exists()
    share.mkdir()
    written = write_sample_csv(share, summary(), template="labware", when=WHEN, naming="per_save")
    assert written.path.parent == share.resolve()
    assert written.path.name.startswith("S-001_") and written.path.suffix == ".csv"
    rows = list(csv.reader(io.StringIO(written.path.read_text(encoding="utf-8"))))
    assert rows[0] == ["SAMPLE_NUMBER", "TEST_NUMBER", "REPORTED_NAME", "ENTRY"]
    assert ["S-001", "T001", "5", "8"] in rows
    assert [p.name for p in share.iterdir()] == [written.path.name]  # no temp file left
    again = write_sample_csv(share, summary(), template="labware", when=WHEN, naming="per_save")
    assert again.path != written.path  # same tick: never overwrites a file a poller may read


def test_per_sample_naming_keeps_one_current_file_per_sample(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    first = write_sample_csv(share, summary(), template="labware", when=WHEN)
    assert first.path.name == "S-001.csv"
    later = WHEN.replace(minute=45)
    second = write_sample_csv(share, summary(plates=0), template="labware", when=later)
    assert second.path == first.path
    assert sorted(p.name for p in share.iterdir()) == ["S-001.csv"]  # replaced, no temp file
    rows = list(csv.reader(io.StringIO(second.path.read_text(encoding="utf-8"))))
    assert ["S-001", "T001", "N", "0"] in rows and ["S-001", "T001", "5", "0"] in rows


def test_per_sample_names_never_collide(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    names = {
        write_sample_csv(share, summary(s), template="labware", when=WHEN).path.name
        for s in ("S 1", "S_1", "S/1", "S1")
    }
    assert len(names) == 4 and "S1.csv" in names
    assert all(n.endswith(".csv") and "/" not in n for n in names)


def test_a_name_that_would_leave_the_share_is_refused(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (share / "S-1_20261126T093000123Z.csv").symlink_to(tmp_path / "elsewhere" / "x.csv")
    with pytest.raises(ShareError):
        target_path(share, "S-1", WHEN)
    (share / "S-2.csv").symlink_to(tmp_path / "elsewhere" / "y.csv")
    with pytest.raises(ShareError):
        target_path(share, "S-2", WHEN, "per_sample")


def test_interrupted_write_leaves_no_file_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = tmp_path / "share"
    share.mkdir()

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", boom)
    with pytest.raises(OSError):
        write_sample_csv(share, summary(), template="labware", when=WHEN)
    assert list(share.iterdir()) == []


def test_leftover_partials_are_cleaned(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    final = share / "S-1_x.csv"
    partial = fsutil.tmp_name_for(final)
    partial.write_text("half a fi")
    keep = share / "S-2_y.csv"
    keep.write_text("whole\n")
    assert fsutil.clean_partials(share) == [partial]
    assert sorted(p.name for p in share.iterdir()) == ["S-2_y.csv"]
