"""Display images: the thumbnail's size and content, the annotated image's size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.files import images


@pytest.mark.parametrize(
    ("width", "height", "target"),
    [(1280, 852, 320), (1279, 851, 320), (1688, 1124, 320), (4032, 3040, 320), (700, 500, 320)],
)
def test_thumbnail_has_the_asked_width_and_keeps_the_aspect(
    width: int, height: int, target: int
) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    thumb = images.thumbnail(frame, target)
    assert thumb.shape[1] == target
    assert abs(thumb.shape[0] - height * target / width) <= 1
    assert thumb.dtype == np.uint8 and thumb.shape[2] == 3


def test_a_narrow_image_is_its_own_thumbnail() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    assert images.thumbnail(frame, 320) is frame
    assert images.thumbnail(frame, 200) is frame


def test_thumbnail_averages_instead_of_aliasing() -> None:
    """One-pixel black and white stripes must come out grey: a decimation that skips pixels
    (no low-pass) would keep only black or only white."""
    stripes = np.zeros((800, 1280, 3), np.uint8)
    stripes[:, ::2] = 255
    thumb = images.thumbnail(stripes, 320)
    assert abs(float(thumb.mean()) - 127.5) < 2
    assert float(thumb.std()) < 3


def test_thumbnail_keeps_the_picture() -> None:
    """A thumbnail still shows a dark disc where the frame has one, at the scaled place."""
    frame = np.full((1124, 1688, 3), 230, np.uint8)
    cv2.circle(frame, (1200, 400), 90, (20, 20, 20), -1)
    thumb = images.thumbnail(frame, 320)
    scale = 320 / 1688
    y, x = round(400 * scale), round(1200 * scale)
    assert thumb[y, x].max() < 40
    assert thumb[5, 5].min() > 220


def test_display_images_are_jpegs_of_the_configured_widths() -> None:
    frame = np.full((1124, 1688, 3), 200, np.uint8)
    out = images.display_images(frame, [], None, 1.0, max_width=1280, thumbnail_width=320)
    annotated = cv2.imdecode(np.frombuffer(out["annotated.jpg"], np.uint8), cv2.IMREAD_COLOR)
    thumb = cv2.imdecode(np.frombuffer(out["thumbnail.jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape[:2] == (852, 1280)
    assert thumb.shape[1] == 320
