"""Writing generated plates to disk: a YOLO dataset plus ground truth and calibration per plate.

Layout under the output folder::

    images/{train,val}/plate_<seed>_<index>.jpg
    labels/{train,val}/plate_<seed>_<index>.txt   class cx cy w h (normalised), one line per well
    truth/plate_<seed>_<index>.json               per-well state and box, row endpoints, variations
    calibration/plate_<seed>_<index>.json         the old system's grid format (format_version 3)
    data.yaml
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2

from models.synth.patterns import CLASSES
from models.synth.render import PlateSample, render_plate

logger = logging.getLogger(__name__)


def plate_stem(seed: int, index: int) -> str:
    return f"plate_{seed}_{index:05d}"


def yolo_lines(sample: PlateSample) -> list[str]:
    """One `class cx cy w h` line per well, normalised to the image, clipped inside it."""
    w, h = sample.width, sample.height
    lines = []
    for well in sample.wells:
        x1, y1, x2, y2 = well["box"]
        x1, x2 = max(0.0, x1), min(float(w), x2)
        y1, y2 = max(0.0, y1), min(float(h), y2)
        cx, cy = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h
        bw, bh = (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{well['class_id']} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return lines


def truth_record(sample: PlateSample, seed: int, index: int, image_name: str) -> dict[str, Any]:
    from models.synth import GENERATOR_VERSION

    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "index": index,
        "image": image_name,
        "image_width": sample.width,
        "image_height": sample.height,
        "classes": list(CLASSES),
        "variations": sample.variations,
        "wells": sample.wells,
        "rows": sample.rows,
        "calibration": sample.calibration,
    }


def shrink(sample: PlateSample, max_side: int) -> PlateSample:
    """The same photo at most `max_side` pixels on its long side, with its labels scaled.

    For training sets only: the trainer resizes to its small input anyway, and full-size frames
    (up to 4056x3040) make its RAM cache and mosaic slow. The photo keeps the JPEG artefacts of
    its real size (it is shrunk after decoding, as the edge does) and is re-encoded at quality 95.
    """
    scale = max_side / max(sample.width, sample.height)
    if scale >= 1.0:
        return sample
    w, h = round(sample.width * scale), round(sample.height * scale)
    image = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    sx, sy = w / sample.width, h / sample.height

    def xy(values: list[float]) -> list[float]:
        return [round(v * (sx if i % 2 == 0 else sy), 2) for i, v in enumerate(values)]

    wells = [
        {**well, "box": xy(well["box"]), "center": xy(well["center"])} for well in sample.wells
    ]
    cal = dict(sample.calibration)
    cal["columns"] = [round(x * sx, 1) for x in cal["columns"]]
    cal["rows"] = [round(y * sy, 1) for y in cal["rows"]]
    cal["bounds"] = {
        "left": cal["columns"][0],
        "right": cal["columns"][-1],
        "top": cal["rows"][0],
        "bottom": cal["rows"][-1],
    }
    cal["image_width"], cal["image_height"] = w, h
    variations = {**sample.variations, "stored_size": f"{w}x{h}"}
    return PlateSample(buf.tobytes(), image, wells, sample.rows, cal, variations)


def write_plate(out: Path, split: str, seed: int, index: int, sample: PlateSample) -> str:
    stem = plate_stem(seed, index)
    image_name = f"{stem}.jpg"
    (out / "images" / split / image_name).write_bytes(sample.jpeg)
    (out / "labels" / split / f"{stem}.txt").write_text("\n".join(yolo_lines(sample)) + "\n")
    record = truth_record(sample, seed, index, f"images/{split}/{image_name}")
    (out / "truth" / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (out / "calibration" / f"{stem}.json").write_text(json.dumps(sample.calibration, indent=2))
    return stem


def write_data_yaml(out: Path, has_val: bool) -> None:
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    val = "images/val" if has_val else "images/train"
    (out / "data.yaml").write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: {val}\nnc: {len(CLASSES)}\n"
        f"names:\n{names}\n"
    )


def generate(
    out: Path,
    n: int,
    seed: int,
    *,
    val_fraction: float = 0.0,
    start: int = 0,
    max_side: int | None = None,
) -> Iterator[str]:
    """Render plates `start..start+n-1` of stream `seed` into `out`; yields each stem as written.

    The last `val_fraction` of the plates go to the val split (disjoint from train).
    """
    n_val = round(n * val_fraction)
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    (out / "calibration").mkdir(parents=True, exist_ok=True)
    write_data_yaml(out, has_val=n_val > 0)
    for k in range(n):
        index = start + k
        split = "val" if k >= n - n_val else "train"
        sample = render_plate(seed, index)
        if max_side is not None:
            sample = shrink(sample, max_side)
        yield write_plate(out, split, seed, index, sample)
