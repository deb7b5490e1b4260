"""Every way an image file can be bad gets its own clear reason."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detect.errors import ImageDecodeError
from edge.detect.imageio import decode_image, header_size, read_image, reduction_for


def encode(ext: str, image: np.ndarray | None = None) -> bytes:
    if image is None:
        image = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_good_images_decode_to_bgr(ext):
    image = decode_image(encode(ext))
    assert image.shape == (60, 80, 3) and image.dtype == np.uint8


def test_grayscale_becomes_three_channels():
    gray = np.full((40, 50), 128, dtype=np.uint8)
    assert decode_image(encode(".png", gray)).shape == (40, 50, 3)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_header_size_matches(ext):
    data = encode(ext)
    fmt = {".jpg": "jpeg", ".png": "png", ".bmp": "bmp"}[ext]
    assert header_size(data, fmt) == (80, 60)


def test_empty_file():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_not_an_image():
    with pytest.raises(ImageDecodeError, match="not a supported image"):
        decode_image(b"%PDF-1.7 this is a document")


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated(ext):
    data = encode(ext)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_corrupt_jpeg_body():
    data = bytearray(encode(".jpg"))
    # Keep the header and the end marker, wreck the scan data in between.
    data[200:-2] = b"\x00" * (len(data) - 202)
    with pytest.raises(ImageDecodeError):
        decode_image(bytes(data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + body + end


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageDecodeError, match="MP limit"):
        decode_image(png_claiming(100_000, 100_000))


def test_tiny_images_are_refused():
    with pytest.raises(ImageDecodeError, match="at least"):
        decode_image(encode(".png", np.zeros((8, 8, 3), dtype=np.uint8)))


def test_max_pixels_is_configurable():
    with pytest.raises(ImageDecodeError, match="limit"):
        decode_image(encode(".jpg"), max_pixels=1000)


def test_read_image_errors(tmp_path: Path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageDecodeError, match="is a directory"):
        read_image(tmp_path)
    good = tmp_path / "plate.png"
    good.write_bytes(encode(".png"))
    assert read_image(good).shape == (60, 80, 3)


def test_reduced_decode_and_factor_choice():
    big = encode(".jpg", np.zeros((1200, 1700, 3), dtype=np.uint8))
    assert reduction_for(big, 512, 512) == 2  # 1700 -> 512 is a 3.3x downscale
    assert reduction_for(big, 128, 128) == 8
    assert reduction_for(big, 1280, 1280) == 1
    assert reduction_for(encode(".png"), 32, 32) == 1  # only JPEG decodes faster reduced
    assert decode_image(big, reduce=2).shape == (600, 850, 3)
    assert decode_image(big, reduce=8).shape == (150, 213, 3)
    with pytest.raises(ValueError, match="reduce"):
        decode_image(big, reduce=3)
