"""The watched-folder source: complete files only, processed/ or failed/, restart-safe."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge.app import Appliance
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, jpeg, plate_image


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def folder_settings(make_settings: SettingsFactory, inbox: Path, stable_s: float = 0.2):  # type: ignore[no-untyped-def]
    return make_settings(
        capture={"type": "folder", "inbox": inbox, "stable_s": stable_s, "poll_s": 0.2}
    )


def test_files_are_processed_and_moved(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "S-100__plate1.jpg").write_bytes(jpeg(plate_image(PLATE_A, seed=1)))
    (inbox / "S-100__plate2.jpg").write_bytes(jpeg(plate_image(PLATE_A, seed=2)))
    (inbox / "notes.txt").write_text("ignored: not an image pattern")
    bad = {
        "S-101__broken.jpg": b"\xff\xd8\xff garbage",
        "S-101__empty.jpg": b"",
        "S-101__truncated.jpg": jpeg(plate_image(PLATE_A, seed=9))[:3000],
        "S-101__text.png": b"a text file named like an image",
    }
    for name, data in bad.items():
        (inbox / name).write_bytes(data)
    app = make_app(folder_settings(make_settings, inbox))
    wait_for(lambda: len(list((inbox / "processed").glob("*.jpg"))) == 2)
    for name in bad:
        wait_for(lambda n=name: (inbox / "failed" / n).exists())
        reason = (inbox / "failed" / f"{name}.reason.txt").read_text()
        assert "image" in reason.lower() and "Traceback" not in reason, reason
    assert (inbox / "notes.txt").exists()
    assert app.runs.list_runs(sample_number="S-101", limit=10).total == 0
    sample = app.runs.get_sample("S-100")
    assert sample.plates == 2
    assert {r.source for r in sample.runs} == {"folder"}


def test_growing_file_waits_until_complete(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = jpeg(plate_image(PLATE_A))
    app = make_app(folder_settings(make_settings, inbox, stable_s=0.6))
    path = inbox / "S-5.jpg"
    with open(path, "wb") as fh:  # a slow plate reader: writes in pieces
        for i in range(0, len(data), len(data) // 5 + 1):
            fh.write(data[i : i + len(data) // 5 + 1])
            fh.flush()
            time.sleep(0.25)
    wait_for(lambda: (inbox / "processed" / "S-5.jpg").exists())
    assert list((inbox / "failed").iterdir()) == []
    assert app.runs.get_sample("S-5").plates == 1


def test_file_left_in_inbox_after_a_crash_is_not_counted_twice(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = jpeg(plate_image(PLATE_A, seed=3))
    settings = folder_settings(make_settings, inbox)
    app = make_app(settings)
    (inbox / "S-7.jpg").write_bytes(data)
    wait_for(lambda: (inbox / "processed" / "S-7.jpg").exists())
    app.stop()
    # As if the process died after committing the run but before moving the file.
    (inbox / "processed" / "S-7.jpg").rename(inbox / "S-7.jpg")
    app2 = make_app(settings)
    wait_for(lambda: (inbox / "processed" / "S-7.jpg").exists())
    assert app2.runs.get_sample("S-7").plates == 1
    assert app2.runs.list_runs(limit=10).total == 1
