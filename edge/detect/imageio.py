"""Decode plate images from bytes with clear reasons for every way a file can be bad.

The size guard reads the dimensions from the file header before OpenCV allocates anything, so
a small file that claims to be 100,000 x 100,000 pixels (a decompression bomb) is refused
without being decoded.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import cv2
import numpy as np

from edge.detect.errors import ImageDecodeError

logger = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # a 12 MP plate camera is far below this; a bomb is far above it
MIN_SIDE = 32

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def image_format(data: bytes) -> str | None:
    """The format a file's signature announces, or None when it is not a supported image."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header, or None where the format's header is not parsed here."""
    if fmt == "png":
        return _png_size(data)
    if fmt == "jpeg":
        return _jpeg_size(data)
    if fmt == "bmp":
        return _bmp_size(data)
    return None


def _looks_truncated(data: bytes, fmt: str) -> bool:
    if fmt == "jpeg":
        # Cameras may pad after the end-of-image marker, so look near the end, not at it.
        return b"\xff\xd9" not in data[-4096:]
    if fmt == "png":
        return b"IEND" not in data[-64:]
    return False


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"the image claims {width}x{height} pixels ({width * height / 1e6:.0f} MP), more than "
            f"the {max_pixels / 1e6:.0f} MP limit; it is not a plate photo"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(
            f"the image is only {width}x{height} pixels; a plate photo needs at least "
            f"{MIN_SIDE} pixels on each side"
        )


_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def reduction_for(data: bytes, height: int, width: int) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that still leaves the frame at least
    as large as the model input needs after letterboxing to `height` x `width`.

    libjpeg scales during the inverse DCT, so a reduced decode costs a fraction of a full one
    and loses nothing the model would see. Other formats decode at full size (factor 1).
    """
    if image_format(data) != "jpeg":
        return 1
    size = _jpeg_size(data)
    if size is None or min(size) == 0:
        return 1
    src_w, src_h = size
    downscale = 1.0 / min(height / src_h, width / src_w)  # >= 1 when the model input is smaller
    factor = 1
    for candidate in (2, 4, 8):
        if candidate <= downscale:
            factor = candidate
    return factor


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, reduce: int = 1) -> np.ndarray:
    """Decode JPEG/PNG/BMP/TIFF/WebP bytes to a BGR uint8 array of shape (H, W, 3).

    `reduce` (2, 4 or 8) decodes at that fraction of the size (fast for JPEG). Raises
    `ImageDecodeError` naming the reason: empty, not an image, truncated, corrupt, too large or
    too small.
    """
    if reduce not in _REDUCED_FLAGS:
        raise ValueError(f"reduce must be one of 1, 2, 4, 8, not {reduce!r}")
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    fmt = image_format(data)
    if fmt is None:
        raise ImageDecodeError(
            f"not a supported image (starts with {data[:8]!r}); use JPEG, PNG, BMP, TIFF or WebP"
        )
    size = header_size(data, fmt)
    if size is not None:
        _check_size(*size, max_pixels)
    if _looks_truncated(data, fmt):
        raise ImageDecodeError(
            f"the {fmt.upper()} file is truncated ({len(data)} bytes, no end marker); the copy "
            "or upload was probably interrupted"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, _REDUCED_FLAGS[reduce])
    if image is None:
        raise ImageDecodeError(f"the {fmt.upper()} file is corrupt: it could not be decoded")
    if size is None:
        _check_size(image.shape[1] * reduce, image.shape[0] * reduce, max_pixels)
    return image


def read_file_bytes(path: Path) -> bytes:
    """A file's bytes; unreadable files raise `ImageDecodeError` with the reason."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(f"{path}: is a directory, not an image") from exc
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def read_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file; unreadable files raise `ImageDecodeError` too."""
    return decode_image(read_file_bytes(path), max_pixels=max_pixels)
