"""Well-crop datasets for the hi-wells classifier, cut exactly as the appliance cuts them.

Every crop comes from a generator v2 photo through ``edge.detect.wellcrops``: the 96 wells of a
plate through the grid the renderer drew (``crop_wells``), the same wells through a slightly
wrong grid (a calibration is never perfect), and ``nowell`` crops through a grid shifted by
0.28-0.5 of a pitch (between wells) or laid over frames that are not plates at all (grey, noise,
text and slide clutter, smooth colour fields).

Crops are stored as uint8 (the crop tensor is a uint8 image divided by 255, so this is exact).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from edge.detect.wellcrops import crop_square, crop_wells, well_boxes
from models.synth.render2 import render_plate_v2

logger = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("flowing", "agglutinated", "invalid", "nowell")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
NOWELL = CLASS_ID["nowell"]


@dataclass
class CropSet:
    x: np.ndarray  # uint8 [N, 3, S, S] RGB
    y: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def concat(parts: list[CropSet]) -> CropSet:
        return CropSet(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=self.x, y=self.y)

    @staticmethod
    def load(path: Path) -> CropSet:
        with np.load(path) as data:
            return CropSet(data["x"], data["y"])


def _to_uint8(batch: np.ndarray) -> np.ndarray:
    return np.rint(batch * 255.0).astype(np.uint8)


def _boxes_crops(
    image: np.ndarray, boxes: list[tuple[float, float, float]], size: int
) -> np.ndarray:
    crops = np.stack([crop_square(image, cx, cy, side, size) for cx, cy, side in boxes])
    return np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2))


def shifted_boxes(
    boxes: list[tuple[float, float, float]], pitch: float, rng: np.random.Generator, n: int
) -> list[tuple[float, float, float]]:
    """``n`` crop boxes centred 0.28-0.5 of a pitch away from a well: between wells."""
    out = []
    for i in rng.choice(len(boxes), size=n, replace=True):
        cx, cy, side = boxes[int(i)]
        ang = rng.uniform(0, 2 * np.pi)
        # At most half a pitch away, so no other well is nearer than the one left.
        dist = float(rng.uniform(0.28, 0.5)) * pitch
        dx, dy = float(np.cos(ang) * dist), float(np.sin(ang) * dist)
        out.append((cx + dx, cy + dy, side * float(rng.uniform(0.9, 1.15))))
    return out


def plate_crops(
    image: np.ndarray,
    grid: CalibrationGrid,
    states: list[str],
    rng: np.random.Generator,
    *,
    size: int,
    scale: float,
    n_jitter: int = 24,
    n_shifted: int = 24,
) -> CropSet:
    """The plate's 96 wells, ``n_jitter`` of them again through a slightly wrong grid, and
    ``n_shifted`` ``nowell`` crops between wells."""
    exact = _to_uint8(crop_wells(image, grid, size=size, scale=scale))
    labels = np.array([CLASS_ID[s] for s in states], np.int64)
    boxes = well_boxes(grid.scaled(image.shape[1], image.shape[0]), scale=scale)
    pitch = float(np.median([b[2] for b in boxes])) / scale
    pick = rng.choice(len(boxes), size=n_jitter, replace=True)
    jittered = []
    for i in pick:
        cx, cy, side = boxes[int(i)]
        dx, dy = rng.uniform(-0.12, 0.12, size=2) * pitch
        jittered.append((cx + dx, cy + dy, side * float(rng.uniform(0.9, 1.1))))
    shifted = shifted_boxes(boxes, pitch, rng, n_shifted)
    parts = [exact]
    ys = [labels]
    if jittered:
        parts.append(_boxes_crops(image, jittered, size))
        ys.append(labels[pick])
    if shifted:
        parts.append(_boxes_crops(image, shifted, size))
        ys.append(np.full(len(shifted), NOWELL, np.int64))
    return CropSet(np.concatenate(parts), np.concatenate(ys))


def clutter_frame(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A frame that is not a plate: grey, noise, a text slide, a colour field, a photo-ish mess."""
    kind = int(rng.integers(5))
    base = rng.uniform(30, 240, size=3)
    img = np.empty((height, width, 3), np.float32)
    img[:] = base
    if kind == 1:  # sensor noise at any level
        img += rng.normal(0, rng.uniform(5, 80), size=img.shape)
    elif kind in (2, 3):  # a slide: text lines, boxes, bars, maybe a few circles
        canvas = np.clip(img, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(5, 30))):
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            what = rng.random()
            if what < 0.5:
                word = "".join(
                    rng.choice(
                        list("abcdefghijklmnopqrstuvwxyz0123456789 HIAB"),
                        size=int(rng.integers(3, 14)),
                    )
                )
                cv2.putText(
                    canvas,
                    word,
                    (x, y),
                    int(rng.choice([0, 1, 2, 3, 4, 6])),
                    float(rng.uniform(0.4, 3.0)),
                    colour,
                    int(rng.integers(1, 5)),
                    cv2.LINE_AA,
                )
            elif what < 0.75:
                cv2.rectangle(
                    canvas,
                    (x, y),
                    (x + int(rng.integers(10, width // 2)), y + int(rng.integers(5, height // 3))),
                    colour,
                    int(rng.choice([-1, 1, 2, 4])),
                )
            elif what < 0.9:
                cv2.line(
                    canvas,
                    (x, y),
                    (int(rng.integers(0, width)), int(rng.integers(0, height))),
                    colour,
                    int(rng.integers(1, 8)),
                )
            else:
                cv2.circle(
                    canvas,
                    (x, y),
                    int(rng.integers(5, 60)),
                    colour,
                    int(rng.choice([-1, 2, 3])),
                    cv2.LINE_AA,
                )
        img = canvas.astype(np.float32)
    elif kind == 4:  # a smooth colour field (a bench, a wall, a hand)
        field = rng.uniform(
            0, 255, size=(int(rng.integers(2, 8)), int(rng.integers(2, 8)), 3)
        ).astype(np.float32)
        img = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + rng.normal(0, rng.uniform(0.5, 6), size=img.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img


def clutter_crops(rng: np.random.Generator, *, size: int, scale: float) -> CropSet:
    """96 ``nowell`` crops: a uniform 8x12 grid laid over a frame that is not a plate."""
    w = int(rng.integers(400, 1400))
    h = int(w * rng.uniform(0.55, 0.8))
    frame = clutter_frame(rng, w, h)
    grid = CalibrationGrid.uniform(w, h, PLATE_96, margin_frac=float(rng.uniform(0.0, 0.15)))
    x = _to_uint8(crop_wells(frame, grid, size=size, scale=scale))
    return CropSet(x, np.full(len(x), NOWELL, np.int64))


def build(
    seed: int,
    start: int,
    n_plates: int,
    mode: str,
    *,
    size: int,
    scale: float,
    clutter_every: int = 4,
) -> CropSet:
    """Crops of plates ``start..start+n_plates-1`` of stream ``seed`` rendered in ``mode``."""
    rng = np.random.default_rng([seed, start, 7])
    parts: list[CropSet] = []
    for index in range(start, start + n_plates):
        sample = render_plate_v2(seed, index, mode=mode)
        grid = CalibrationGrid.from_legacy(sample.calibration)
        states = [w["state"] for w in sample.wells]
        parts.append(plate_crops(sample.image, grid, states, rng, size=size, scale=scale))
        if clutter_every and index % clutter_every == 0:
            parts.append(clutter_crops(rng, size=size, scale=scale))
    return CropSet.concat(parts)
