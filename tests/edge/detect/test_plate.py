"""`edge.detect.plate`: the appliance's decode shares the reader's full-size rule, EXIF included."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from edge.detect.base import create_detector
from edge.detect.plate import decode
from edge.detect.settings import OnnxDetectorSettings


def with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment holding only the Orientation tag (0x0112)."""
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_reduced_decode_of_a_rotated_photo_reports_its_full_size() -> None:
    _, buf = cv2.imencode(".jpg", np.zeros((1201, 1701, 3), np.uint8))
    data = with_orientation(buf.tobytes(), 6)  # stored landscape, shown portrait
    detector = create_detector(OnnxDetectorSettings())  # the shipped model: a reduced decode
    try:
        image, factor, full, _ = decode(detector, data)
    finally:
        detector.close()
    h, w = image.shape[:2]
    assert factor > 1 and h > w, (factor, image.shape)
    assert full == (1201, 1701)
