"""Run images on disk: raw (as received), annotated (boxes and well labels drawn AFTER
inference, never before) and a thumbnail, in one folder per run that appears atomically."""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.files.fsutil import TMP_MARK, fsync_dir, io_pool

logger = logging.getLogger(__name__)

KINDS = ("raw", "annotated", "thumbnail")
_COLOURS = {  # BGR
    "flowing": (40, 170, 40),
    "agglutinated": (40, 40, 220),
    "invalid": (0, 165, 255),
    "unread": (160, 160, 160),
}


def raw_name(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    return f"raw.{ext if ext in ('jpg', 'jpeg', 'png', 'bmp', 'tif', 'tiff') else 'bin'}"


def annotate(
    image: np.ndarray,
    wells: Iterable[Any],
    grid: Any | None,
    scale: float = 1.0,
    max_width: int | None = None,
    in_place: bool = False,
) -> np.ndarray:
    """Draw the grid, each well's box and label on a copy of the frame, at most `max_width`
    wide (a display image: drawing and encoding a 12 MP frame would cost more than inference).
    Coordinates are in full-size pixels; `scale` maps them onto the given frame. `in_place`
    draws on `image` itself when the caller has no further use for it (saves a frame copy)."""
    h0, w0 = image.shape[:2]
    if max_width and w0 > max_width:
        ratio = max_width / w0
        out = cv2.resize(
            image, (max_width, max(1, round(h0 * ratio))), interpolation=cv2.INTER_LINEAR
        )
        scale *= ratio
    else:
        out = image if in_place else image.copy()
    ui = max(out.shape[:2]) / 1200.0  # line and text size follow the drawn image's size
    thick = max(1, round(2 * ui))
    if grid is not None:
        h, w = out.shape[:2]
        for x in grid.columns:
            cv2.line(out, (round(x * scale), 0), (round(x * scale), h - 1), (200, 200, 200), 1)
        for y in grid.rows:
            cv2.line(out, (0, round(y * scale)), (w - 1, round(y * scale)), (200, 200, 200), 1)
    for well in wells:
        state = str(getattr(well, "state", "unread"))
        colour = _COLOURS.get(state, (255, 255, 255))
        box = getattr(well, "box", None)
        if box is not None:
            x1, y1, x2, y2 = (v * scale for v in _box_coords(box))
            cv2.rectangle(out, (round(x1), round(y1)), (round(x2), round(y2)), colour, thick)
            label = f"{well.well_id} {state[:4]}"
            if getattr(well, "flags", None):
                label += "*"
            cv2.putText(
                out,
                label,
                (round(x1), max(10, round(y1) - 3)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * ui,
                colour,
                max(1, thick // 2),
                cv2.LINE_AA,
            )
    return out


def _box_coords(box: Any) -> tuple[float, float, float, float]:
    if isinstance(box, (list, tuple)):
        return float(box[0]), float(box[1]), float(box[2]), float(box[3])
    return float(box.x1), float(box.y1), float(box.x2), float(box.y2)


def thumbnail(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image
    # Halve by 2x2 block means (INTER_AREA at exactly 1/2: OpenCV's vectorised fast path, no
    # aliasing) while at least twice too wide, then one bilinear step under 2x. A chain of
    # pyrDown (5x5 Gaussian) costs about 4x as much, INTER_AREA at other ratios 3-4x.
    while image.shape[1] >= 2 * width:
        image = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    if w == width:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_LINEAR)


# Annotated image and thumbnail: a third smaller than at 88 and cheaper to encode; these bytes
# go through the run's commit (`pending_images`). OpenCV leaves JPEG_OPTIMIZE off by default.
DISPLAY_QUALITY = 80


def encode_jpeg(image: np.ndarray, quality: int = 88) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf)


def display_images(
    frame: np.ndarray,
    wells: Iterable[Any],
    grid: Any | None,
    scale: float,
    *,
    max_width: int,
    thumbnail_width: int,
) -> dict[str, bytes]:
    """The annotated image and its thumbnail, encoded (file name -> bytes). Draws on `frame`
    itself: the caller has no further use for it (saves a frame copy)."""
    annotated = annotate(frame, wells, grid, scale, max_width=max_width, in_place=True)
    return {
        "annotated.jpg": encode_jpeg(annotated, DISPLAY_QUALITY),
        "thumbnail.jpg": encode_jpeg(thumbnail(annotated, thumbnail_width), DISPLAY_QUALITY),
    }


def write_run_images(
    images_dir: Path,
    run_id: str,
    files: Mapping[str, bytes],
) -> tuple[Path, int]:
    """Write `files` (name -> bytes) into images_dir/run_id, atomically as a folder.

    Returns (folder, total bytes). A crash leaves at most a hidden partial folder that
    `fsutil.clean_partials` removes on start.
    """
    images_dir.mkdir(parents=True, exist_ok=True)
    final = images_dir / run_id
    tmp = images_dir / f".{run_id}{TMP_MARK}{secrets.token_hex(4)}"
    tmp.mkdir()
    total = 0
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            total += len(data)
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)  # an orphan from a crash between images and commit
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(images_dir)
    return final, total


class RawFolder:
    """The run's folder holding the raw image (bytes as received, never re-encoded), written
    and fsynced by `write_run_images` in a thread of its own while the plate is being read:
    the disk flush overlaps decode and inference instead of following them."""

    def __init__(self, images_dir: Path, run_id: str, name: str, data: bytes) -> None:
        self._future = io_pool().submit(write_run_images, images_dir, run_id, {name: data})

    def result(self) -> tuple[Path, int]:
        """(folder, bytes) once the raw image is durable; the write's error otherwise."""
        return self._future.result()

    def discard(self) -> None:
        """The plate will not become a run: remove what was written."""
        try:
            folder, _ = self._future.result()
        except Exception:  # noqa: BLE001 - nothing was left: write_run_images cleans up
            return
        remove_run_dir(folder)


def write_derived(run_dir: Path, files: Mapping[str, bytes]) -> None:
    """Add files to an existing run folder, each atomically (hidden name, fsync, rename), then
    fsync the folder once."""
    for name, data in files.items():
        final = run_dir / name
        tmp = run_dir / f".{name}{TMP_MARK}{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(run_dir)


class BackgroundWriter:
    """One thread that runs `write(run_id)` for each submitted run, off the plate's critical
    path. Started on first use; `drain` waits until everything submitted is done."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self._write = write
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_ms = 0.0  # how long the last write took (the benchmark reports it)

    def submit(self, run_id: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="image-writer", daemon=True)
                self._thread.start()
        self._q.put(run_id)

    def _loop(self) -> None:
        while True:
            run_id = self._q.get()
            try:
                if run_id is None:
                    return
                t0 = time.perf_counter()
                try:
                    self._write(run_id)
                    self.last_ms = (time.perf_counter() - t0) * 1e3
                except Exception:
                    # The images stay pending in the database: written on the next start.
                    logger.exception("display images of run %s not written yet", run_id)
            finally:
                self._q.task_done()

    def drain(self) -> None:
        self._q.join()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._q.put(None)
            thread.join()


def find_image(run_dir: Path, kind: str) -> Path | None:
    if kind == "raw":
        matches = sorted(run_dir.glob("raw.*"))
        return matches[0] if matches else None
    path = run_dir / f"{kind}.jpg"
    return path if path.is_file() else None


def remove_run_dir(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
