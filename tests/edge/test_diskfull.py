"""A full disk refuses capture cleanly and loses nothing already stored.

The real test mounts an 8 MiB tmpfs for the data directory (we are root in CI). Where mount is
not permitted it is skipped with the reason, and the injected-ENOSPC test below still covers the
write path: the free-disk floor above the real free space, and ENOSPC raised at the file write.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.app import Appliance
from edge.errors import DiskFull
from edge.files import images
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, jpeg, plate_image


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected-ENOSPC test covers this path")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(
            f"mount not permitted here ({res.stderr.strip()}); "
            "the injected-ENOSPC test covers this path"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def submit(app: Appliance, seed: int) -> tuple[str, str | None, str]:
    """(state, run id, error code); `refused` when the upload was refused before queueing."""
    try:
        t = app.intake.submit_image(
            jpeg(plate_image(PLATE_A, seed=seed)), f"{seed}.jpg", RunRequest(sample_number="D-1")
        )
    except DiskFull as exc:
        assert "disk is full" in exc.message and "nothing was lost" in exc.message
        return "refused", None, exc.code
    st = app.intake.wait(t.id, 30)
    if st.error is not None:
        assert "disk is full" in st.error.message and "nothing was lost" in st.error.message
    return st.state, st.run_id, st.error.code if st.error else ""


def test_real_full_disk_refuses_and_keeps_what_is_stored(
    small_disk: Path,
    make_app: Callable[..., Appliance],
    make_settings: SettingsFactory,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        data_dir=small_disk / "data", share_dir=tmp_path / "share", retention={"disk_floor_mb": 0}
    )
    app = make_app(settings)
    stored = [submit(app, i)[1] for i in range(3)]
    assert all(stored)
    before = app.runs.get_sample("D-1")
    filler = small_disk / "filler"
    # Fill the disk to the last block. Unbuffered: a buffered file keeps the chunk that did not
    # fit and raises ENOSPC once more when it is closed.
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # Refused at the spool, or failed at the image write: either way said clearly.
    outcomes = [submit(app, 100 + i) for i in range(3)]
    assert all(
        state in ("refused", "failed") and code == "disk_full" for state, _, code in outcomes
    ), outcomes
    spool = small_disk / "data" / "spool"
    deadline = time.monotonic() + 5  # a failed plate leaves the spool right after its ticket
    while list(spool.glob("*.plate")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(spool.glob("*.plate"))

    assert app.store.check() == []
    assert [r.run_id for r in app.runs.list_runs(limit=10).items] == list(reversed(stored))
    assert app.runs.get_sample("D-1").distribution == before.distribution
    for run_id in stored:
        assert app.runs.run_image(run_id or "", "raw").stat().st_size > 0
    assert not [p for p in (app.settings.resolved_images_dir).iterdir() if p.name.startswith(".")]

    filler.unlink()  # space again: the appliance carries on
    assert submit(app, 200)[0] == "done"


def test_floor_above_free_space_refuses_capture_before_any_work(
    make_app: Callable[..., Appliance],
    make_settings: SettingsFactory,
) -> None:
    app = make_app(make_settings(retention={"disk_floor_mb": 1}))
    assert submit(app, 1)[0] == "done"
    app.settings.retention.disk_floor_mb = 10**9  # far above any real free space
    with pytest.raises(DiskFull) as err:
        app.intake.submit_image(
            jpeg(plate_image(PLATE_A, seed=2)), "b.jpg", RunRequest(sample_number="D")
        )
    assert err.value.http_status == 507 and "supervisor" in err.value.message
    with pytest.raises(DiskFull):
        app.intake.capture(RunRequest(sample_number="D"))
    assert not app.health.readiness().ready
    assert app.runs.list_runs(limit=10).total == 1


def test_injected_enospc_at_the_image_write_fails_the_run_and_loses_nothing(
    make_app: Callable[..., Appliance],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app()
    state, kept, _ = submit(app, 1)
    assert state == "done"
    real_fsync, real_write = os.fsync, images.write_run_images

    def full_disk_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def write_on_a_full_disk(*args: object, **kw: object) -> object:
        # ENOSPC at the image files' fsync, after the upload itself was accepted.
        monkeypatch.setattr(images.os, "fsync", full_disk_fsync)
        try:
            return real_write(*args, **kw)  # type: ignore[arg-type]
        finally:
            monkeypatch.setattr(images.os, "fsync", real_fsync)

    monkeypatch.setattr(images, "write_run_images", write_on_a_full_disk)
    state, run_id, code = submit(app, 2)
    assert (state, run_id, code) == ("failed", None, "disk_full")
    monkeypatch.setattr(images, "write_run_images", real_write)
    assert (
        app.runs.list_runs(limit=10).total == 1 and app.runs.get_run(kept or "").status == "current"
    )
    assert not [p for p in app.settings.resolved_images_dir.iterdir() if p.name.startswith(".")]
    assert app.store.check() == []
    assert submit(app, 3)[0] == "done"
