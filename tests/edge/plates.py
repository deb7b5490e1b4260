"""Synthetic plates for the edge tests: an image and the detections a detector would report.

`plate_image` draws 96 wells on a uniform grid; `frame_boxes` gives, for the same geometry,
one box per well whose class follows the wanted row endpoints (flowing up to the endpoint,
agglutinated after), as `edge.detect`'s fake backend takes them.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

WIDTH, HEIGHT = 1200, 800
MARGIN = 0.03


def _centre(row: int, col: int, width: int = WIDTH, height: int = HEIGHT) -> tuple[float, float]:
    x0, x1 = width * MARGIN, width * (1 - MARGIN)
    y0, y1 = height * MARGIN, height * (1 - MARGIN)
    return x0 + (x1 - x0) * (col + 0.5) / 12, y0 + (y1 - y0) * (row + 0.5) / 8


def plate_image(
    endpoints: list[int], seed: int = 0, width: int = WIDTH, height: int = HEIGHT
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 235, dtype=np.uint8)
    image += rng.integers(0, 8, size=image.shape, dtype=np.uint8)
    radius = int(min(width / 12, height / 8) * 0.35)
    for r, end in enumerate(endpoints):
        for c in range(12):
            cx, cy = _centre(r, c, width, height)
            colour = (40, 40, 200) if c < end else (160, 160, 230)
            cv2.circle(image, (int(cx), int(cy)), radius, colour, -1)
    return image


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def frame_boxes(
    endpoints: list[int], width: int = WIDTH, height: int = HEIGHT, confidence: float = 0.9
) -> list[dict[str, Any]]:
    half = min(width / 12, height / 8) * 0.35
    boxes = []
    for r, end in enumerate(endpoints):
        for c in range(12):
            cx, cy = _centre(r, c, width, height)
            boxes.append(
                {
                    "x1": cx - half,
                    "y1": cy - half,
                    "x2": cx + half,
                    "y2": cy + half,
                    "class_name": "flowing" if c < end else "agglutinated",
                    "confidence": confidence,
                }
            )
    return boxes


def fake_detector(*frames: list[int]) -> dict[str, Any]:
    """Detector settings for `edge.detect`'s fake backend cycling through these plates."""
    return {
        "type": "fake",
        "frames": [frame_boxes(list(f)) for f in frames],
        "min_confidence": 0.05,
    }


# DOMAIN.md's worked example: two plates of sample S-001.
PLATE_A = [5, 6, 5, 7, 4, 6, 5, 0]
PLATE_B = [6, 6, 5, 5, 7, 8, 6, 6]
