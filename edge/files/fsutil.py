"""Crash-safe file writes: temporary name in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

TMP_MARK = ".partial-"

_IO_POOL: ThreadPoolExecutor | None = None
_IO_POOL_LOCK = threading.Lock()


def io_pool() -> ThreadPoolExecutor:
    """Threads for file writes that overlap other work (a write + fsync waits on the disk,
    not the CPU): the raw image during inference, the CSV during the commit."""
    global _IO_POOL
    with _IO_POOL_LOCK:
        if _IO_POOL is None:
            _IO_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="io")
        return _IO_POOL


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name_for(final: Path) -> Path:
    # Leading dot and no final extension: a LIMS poller matching *.csv never sees it.
    return final.with_name(f".{final.name}{TMP_MARK}{secrets.token_hex(4)}")


def atomic_write(final: Path, data: bytes) -> None:
    """Either the whole new file is visible under `final`, or nothing changed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name_for(final)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def clean_partials(folder: Path) -> list[Path]:
    """Remove leftovers of writes interrupted by a crash (run on start)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(f".*{TMP_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logger.info("removed %d interrupted partial file(s) under %s", len(removed), folder)
    return removed


def disk_usage(path: Path) -> tuple[int, int]:
    """(free bytes, total bytes) of the filesystem holding `path` (or its nearest parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return int(usage.free), int(usage.total)
