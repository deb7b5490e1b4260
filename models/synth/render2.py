"""Generator v2: a whole plate photo in either reading mode, with its exact labels.

The flat plate is drawn in millimetres times a pixel scale, marked (handwriting, pen rings,
labels), warped into the frame (rotation, keystone, shift, scale so a well is 40-140 px
across), then spoiled like a photo: light gradient, glare, colour cast, exposure, gamma, blur,
low resolution, noise and JPEG. Drawn-on-the-frame clutter (an ROI rectangle, endpoint bars)
goes on after the warp, as an operator or a slide author would add it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from models.synth.look import READING_MODES, PlateLook, sample_look
from models.synth.patterns import RowSpec, WellSpec, plate_pattern
from models.synth.render import (
    A1_X_MM,
    A1_Y_MM,
    N_COLS,
    N_ROWS,
    PITCH_MM,
    PLATE_H_MM,
    PLATE_W_MM,
    ROW_LABELS,
    PlateSample,
    _legacy_calibration,
    _row_truth,
    _well_truth,
)
from models.synth.wells2 import INKS, draw_well, pick_kind

# Bump when the v2 rendering changes images for the same seed.
GENERATOR_V2_VERSION = "2.5.0"
_FONTS = (cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN)


def _pattern(rng: np.random.Generator) -> tuple[list[WellSpec], list[RowSpec], str]:
    """HI rows (flowing, then agglutinated), plus whole-plate cases real labs photograph."""
    u = rng.random()
    if u < 0.05:  # an empty or dry plate: every well invalid
        specs, rows = plate_pattern(rng, N_ROWS, N_COLS, invalid_rate=1.0)
        return specs, rows, "empty"
    if u < 0.1:  # every well inhibited (a control plate, buttons everywhere)
        specs, rows = plate_pattern(rng, N_ROWS, N_COLS, invalid_rate=0.0, skip_rate=0.0)
        specs = [WellSpec(s.row, s.col, "flowing", "button") for s in specs]
        return specs, [RowSpec(r.row, N_COLS, ()) for r in rows], "all-flowing"
    specs, rows = plate_pattern(rng, N_ROWS, N_COLS)
    if rng.random() < 0.12:
        # An HA titration: agglutinated first, buttons past the end point. Same classes.
        flip = {"flowing": "agglutinated", "agglutinated": "flowing"}
        specs = [WellSpec(s.row, s.col, flip.get(s.state, s.state), s.kind) for s in specs]
        return specs, rows, "ha"
    return specs, rows, "hi"


def _draw_plate(
    specs: list[WellSpec],
    kinds: list[str],
    look: PlateLook,
    rng: np.random.Generator,
    scale: float,
    parallax: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """The flat plate. ``parallax`` (k, x, y): the floor of a well at ``p`` mm from the point
    under the lens (``x``, ``y`` mm from the plate's centre) is seen ``-k * p`` mm from its
    opening (k = floor depth / camera height)."""
    cw, ch = int(np.ceil(PLATE_W_MM * scale)), int(np.ceil(PLATE_H_MM * scale))
    canvas = np.empty((ch, cw, 3), np.float32)
    canvas[:] = look.body
    lumps = rng.standard_normal((6, 9)).astype(np.float32)
    canvas *= 1.0 + 0.04 * cv2.resize(lumps, (cw, ch), interpolation=cv2.INTER_CUBIC)[..., None]
    mask = np.zeros((ch, cw), np.float32)
    corner = int(3.5 * scale)
    cv2.rectangle(mask, (corner, 0), (cw - corner, ch), 1.0, -1)
    cv2.rectangle(mask, (0, corner), (cw, ch - corner), 1.0, -1)
    for x, y in (
        (corner, corner),
        (cw - corner, corner),
        (corner, ch - corner),
        (cw - corner, ch - corner),
    ):
        cv2.circle(mask, (x, y), corner, 1.0, -1, cv2.LINE_AA)
    # The skirt: a band along the plate's edge, lighter or darker than the top.
    edge = cv2.erode(mask, np.ones((int(1.5 * scale),) * 2, np.uint8))
    canvas *= (float(rng.uniform(0.8, 1.1)) + (1 - float(rng.uniform(0.8, 1.1))) * edge)[..., None]
    _embossed_labels(canvas, rng, scale)
    radius = look.well_radius_mm * scale
    k, ax, ay = parallax
    lens_x, lens_y = PLATE_W_MM / 2 + ax, PLATE_H_MM / 2 + ay
    for spec, kind in zip(specs, kinds, strict=True):
        x_mm, y_mm = A1_X_MM + spec.col * PITCH_MM, A1_Y_MM + spec.row * PITCH_MM
        shift = (
            -k * (x_mm - lens_x) / look.well_radius_mm,
            -k * (y_mm - lens_y) / look.well_radius_mm,
        )
        draw_well(canvas, x_mm * scale, y_mm * scale, radius, spec.state, kind, look, rng, shift)
    _markings(canvas, look, rng, scale)
    return canvas, mask


def _embossed_labels(canvas: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    text = np.zeros(canvas.shape[:2], np.uint8)
    for r in range(N_ROWS):
        org = (int(5.2 * scale), int((A1_Y_MM + r * PITCH_MM + 1.3) * scale))
        cv2.putText(text, ROW_LABELS[r], org, cv2.FONT_HERSHEY_SIMPLEX, 0.09 * scale, 255, 2)
    for c in range(N_COLS):
        org = (int((A1_X_MM + c * PITCH_MM - 1.5) * scale), int(6.0 * scale))
        cv2.putText(text, str(c + 1), org, cv2.FONT_HERSHEY_SIMPLEX, 0.09 * scale, 255, 2)
    sign = 1.0 if rng.random() < 0.5 else -0.6
    canvas *= (1.0 - sign * float(rng.uniform(0.05, 0.25)) * text / 255.0)[..., None]


def _ink(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    ink = INKS[int(rng.integers(len(INKS)))]
    alpha = mask * float(rng.uniform(0.5, 0.95))
    canvas *= 1.0 - alpha[..., None] * (1.0 - ink[None, None, :])


def _markings(canvas: np.ndarray, look: PlateLook, rng: np.random.Generator, scale: float) -> None:
    """Handwriting, pen rings around wells, a paper label: on the plastic, not over floors."""
    h, w = canvas.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:  # a plate number or initials in a margin
        word = "".join(rng.choice(list("0123456789ABCDEFHKLMPRSTxyz-/"), size=rng.integers(2, 6)))
        org = (
            int(rng.uniform(0.0, 0.7) * w),
            int(rng.choice([rng.uniform(2, 6), rng.uniform(80, 85)]) * scale),
        )
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        cv2.putText(
            mask,
            word,
            org,
            font,
            float(rng.uniform(0.08, 0.2)) * scale,
            255,
            max(1, int(rng.uniform(0.1, 0.35) * scale)),
            cv2.LINE_AA,
        )
    if rng.random() < 0.25:  # a pen ring around a well or two (the wall, not the floor)
        for _ in range(int(rng.integers(1, 4))):
            r, c = int(rng.integers(N_ROWS)), int(rng.integers(N_COLS))
            centre = (int((A1_X_MM + c * PITCH_MM) * scale), int((A1_Y_MM + r * PITCH_MM) * scale))
            cv2.circle(mask, centre, int(4.3 * scale), 255, max(1, int(0.25 * scale)), cv2.LINE_AA)
    if rng.random() < 0.15:  # a line between two rows or columns (an endpoint marker)
        c = int(rng.integers(1, N_COLS))
        x = int((A1_X_MM + (c - 0.5) * PITCH_MM) * scale)
        y0 = int((A1_Y_MM + rng.integers(0, N_ROWS) * PITCH_MM - 4) * scale)
        cv2.line(mask, (x, y0), (x, y0 + int(PITCH_MM * scale)), 255, max(2, int(0.5 * scale)))
    if mask.any():
        _ink(canvas, mask.astype(np.float32) / 255.0, rng)
    if rng.random() < 0.15:  # a white paper label on the skirt
        x0 = int(rng.uniform(10, 90) * scale)
        y0 = int(rng.choice([0.3, 80.5]) * scale)
        x1, y1 = x0 + int(rng.uniform(15, 35) * scale), y0 + int(4.5 * scale)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (235, 238, 240), -1)
        text = np.zeros(canvas.shape[:2], np.uint8)
        cv2.putText(
            text,
            "HI " + str(int(rng.integers(1, 999))),
            (x0 + 6, y1 - int(scale)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.07 * scale,
            255,
            2,
            cv2.LINE_AA,
        )
        canvas *= (1.0 - 0.8 * text.astype(np.float32) / 255.0)[..., None]


def _homography(
    rng: np.random.Generator, pitch_px: float, s: float
) -> tuple[np.ndarray, tuple[int, int], dict[str, float]]:
    """Canvas px -> frame px, and the frame size, for a plate whose pitch is ``pitch_px``."""
    grid_w, grid_h = N_COLS * pitch_px, N_ROWS * pitch_px
    fill = float(rng.uniform(0.7, 0.96))
    frame_w = int(grid_w / fill) & ~1
    frame_h = int(max(grid_h / fill, frame_w * float(rng.uniform(0.56, 0.75)))) & ~1
    gx0, gy0 = (A1_X_MM - PITCH_MM / 2) * s, (A1_Y_MM - PITCH_MM / 2) * s
    src = np.array(
        [
            [gx0, gy0],
            [gx0 + N_COLS * PITCH_MM * s, gy0],
            [gx0 + N_COLS * PITCH_MM * s, gy0 + N_ROWS * PITCH_MM * s],
            [gx0, gy0 + N_ROWS * PITCH_MM * s],
        ],
        np.float32,
    )
    half = np.array([grid_w, grid_h]) / 2
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
    local += rng.uniform(-0.012, 0.012, size=(4, 2)) * (2 * half)  # keystone
    rot = float(rng.uniform(-1.2, 1.2))
    a = np.deg2rad(rot)
    local = local @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T
    lo, hi = local.min(axis=0), local.max(axis=0)
    size = np.array([frame_w, frame_h], np.float64)
    # The grid stays in the frame; the plate's rim may leave it.
    cmin, cmax = 0.01 * size - lo, 0.99 * size - hi
    centre = rng.uniform(np.minimum(cmin, cmax), np.maximum(cmin, cmax))
    hmat = cv2.getPerspectiveTransform(src, (local + centre).astype(np.float32))
    return hmat, (frame_w, frame_h), {"rotation_deg": rot, "fill": fill, "pitch_px": pitch_px}


def _frame_clutter(
    img: np.ndarray, centres: np.ndarray, pitch: float, rng: np.random.Generator
) -> None:
    h, w = img.shape[:2]
    if rng.random() < 0.2:  # an ROI rectangle drawn by software
        colour = [(0, 255, 0), (0, 0, 255), (255, 0, 0), (0, 255, 255)][int(rng.integers(4))]
        m = int(rng.uniform(2, 30))
        cv2.rectangle(img, (m, m), (w - m, h - m), colour, int(rng.integers(1, 4)))
    if rng.random() < 0.12:  # black endpoint bars between wells, as on a slide
        for _ in range(int(rng.integers(2, 8))):
            r, c = int(rng.integers(N_ROWS)), int(rng.integers(1, N_COLS))
            x = int((centres[r, c - 1, 0] + centres[r, c, 0]) / 2)
            y = int(centres[r, c, 1])
            cv2.line(
                img,
                (x, int(y - 0.45 * pitch)),
                (x, int(y + 0.45 * pitch)),
                (10, 10, 10),
                max(2, int(0.08 * pitch)),
            )


def _spoil(
    rng: np.random.Generator, img: np.ndarray, pitch: float
) -> tuple[np.ndarray, dict[str, Any]]:
    h, w = img.shape[:2]
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    gdir = rng.uniform(0, 2 * np.pi)
    gradient, vignette = float(rng.uniform(0, 0.3)), float(rng.uniform(0, 0.3))
    light = (
        1.0
        + gradient * (np.cos(gdir) * xx + np.sin(gdir) * yy) / 2
        - vignette * (xx**2 + yy**2) / 2
    )
    img *= light[..., None]
    glare = 0.0
    if rng.random() < 0.3:  # a soft reflection of a lamp
        glare = float(rng.uniform(0.2, 0.8))
        gx, gy = rng.uniform(-1, 1, size=2)
        sx, sy = rng.uniform(0.05, 0.4, size=2)
        spot = np.exp(-(((xx - gx) / sx) ** 2 + ((yy - gy) / sy) ** 2))
        img += (255.0 - img) * (glare * spot)[..., None]
    cast = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    exposure = float(rng.uniform(0.7, 1.15))
    img *= (cast * exposure)[None, None, :]
    np.clip(img, 0, 255, out=img)
    gamma = float(rng.uniform(0.75, 1.3))
    img = 255.0 * (img / 255.0) ** gamma
    blur = 0.0 if rng.random() < 0.35 else float(rng.uniform(0.005, 0.035)) * pitch
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    lowres = 1.0
    if rng.random() < 0.2:  # a low-resolution source scaled back up (a slide, a screenshot)
        lowres = float(rng.uniform(0.35, 0.8))
        small = cv2.resize(img, None, fx=lowres, fy=lowres, interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    noise = 0.0 if rng.random() < 0.3 else float(rng.uniform(1.0, 9.0))
    if noise > 0:
        img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    meta = {
        "gradient": gradient,
        "vignette": vignette,
        "glare": glare,
        "exposure": exposure,
        "gamma": gamma,
        "blur_sigma": blur,
        "lowres": lowres,
        "noise_sigma": noise,
        "colour_cast": float(np.max(np.abs(cast - 1.0))),
    }
    return np.clip(img, 0, 255).astype(np.uint8), meta


def render_plate_v2(
    seed: int,
    index: int,
    *,
    mode: str | None = None,
    pitch_px: float | None = None,
    jpeg_quality: int | None = None,
    parallax: bool = True,
) -> PlateSample:
    """Plate ``index`` of stream ``seed`` in reading ``mode`` (drawn from the stream if None).

    ``parallax``: the camera sees each well's floor displaced towards the point under the lens
    (generator 2.5.0; drawn from its own stream, so ``parallax=False`` gives 2.4.0's plate)."""
    rng = np.random.default_rng([seed, index, 2])
    prng = np.random.default_rng([seed, index, 5])
    # k = floor depth (about 10 mm) / camera height: 0 for a far camera or a scanner, 0.05 for
    # a phone about 20 cm above the plate; the lens is near the plate's centre.
    k = 0.0 if prng.random() < 0.2 else float(prng.uniform(0.005, 0.05))
    axis = prng.normal(0.0, 8.0, size=2)
    if not parallax:
        k = 0.0
    if mode is None:
        mode = str(READING_MODES[int(rng.integers(2))])
    if mode not in READING_MODES:
        raise ValueError(f"reading mode {mode!r} is not one of {READING_MODES}")
    look = sample_look(rng, mode)
    specs, row_specs, pattern = _pattern(rng)
    kinds = [pick_kind(rng, mode, s.state) for s in specs]
    specs = [WellSpec(s.row, s.col, s.state, k) for s, k in zip(specs, kinds, strict=True)]
    pitch = float(
        pitch_px if pitch_px is not None else np.exp(rng.uniform(np.log(42), np.log(150)))
    )
    # The flat plate is drawn at about the frame's scale, so the warp stays close to 1:1.
    scale = max(4.5, pitch / PITCH_MM)
    hmat, (fw, fh), geo = _homography(rng, pitch, scale)
    canvas, mask = _draw_plate(specs, kinds, look, rng, scale, (k, float(axis[0]), float(axis[1])))
    frame = np.empty((fh, fw, 3), np.float32)
    frame[:] = look.backlight
    grad = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(1.0, 1.15), fw, dtype=np.float32)
    frame *= grad[None, :, None]
    warped = cv2.warpPerspective(canvas, hmat, (fw, fh), flags=cv2.INTER_LINEAR)
    cover = cv2.warpPerspective(mask, hmat, (fw, fh), flags=cv2.INTER_LINEAR)[..., None]
    frame = frame * (1.0 - cover) + warped * cover
    centres = _centres(hmat, scale)
    _frame_clutter(frame, centres, pitch, rng)
    image, photo = _spoil(rng, frame, pitch)
    quality = int(jpeg_quality if jpeg_quality is not None else rng.integers(40, 96))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    # Boxes: the warped outline of each well's wall, as generator v1 gives them.
    wells, _ = _well_truth(specs, hmat, scale, look.well_radius_mm)
    variations = {
        "reading": mode,
        "pattern": pattern,
        "backlight": look.backlight_name,
        "plate_type": look.plate_type,
        "wall_tone": look.wall_tone,
        "resolution": f"{fw}x{fh}",
        "jpeg_quality": quality,
        "invalid_wells": sum(1 for s in specs if s.state == "invalid"),
        "parallax": round(k, 4),
        **geo,
        **photo,
    }
    return PlateSample(
        buf.tobytes(),
        decoded,
        wells,
        _row_truth(specs, row_specs),
        _legacy_calibration(centres, fw, fh),
        variations,
    )


def _centres(hmat: np.ndarray, s: float) -> np.ndarray:
    pts = np.array(
        [
            [(A1_X_MM + c * PITCH_MM) * s, (A1_Y_MM + r * PITCH_MM) * s]
            for r in range(N_ROWS)
            for c in range(N_COLS)
        ],
        np.float64,
    )
    return cv2.perspectiveTransform(pts[None], hmat)[0].reshape(N_ROWS, N_COLS, 2)
