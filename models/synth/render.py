"""Rendering a whole synthetic plate photo with its exact labels.

The plate is drawn flat in plate coordinates (millimetres times a pixel scale), then warped into
the camera frame with a small rotation, perspective, shift and scale, then spoiled the way real
photos are: uneven light, colour cast, exposure, defocus, sensor noise and JPEG. Every well's box
is the warped outline of its rim, so labels stay exact whatever the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from models.synth.patterns import CLASS_ID, RowSpec, WellSpec, plate_pattern, true_endpoint
from models.synth.wells import PlateStyle, draw_well

# ANSI/SLAS 96-well footprint in millimetres.
PLATE_W_MM, PLATE_H_MM = 127.76, 85.48
A1_X_MM, A1_Y_MM, PITCH_MM = 14.38, 11.24, 9.0
N_ROWS, N_COLS = 8, 12
ROW_LABELS = "ABCDEFGH"

# (width, height, weight): the old system's frames, common camera modes and the HQ camera.
RESOLUTIONS: tuple[tuple[int, int, float], ...] = (
    (1700, 1200, 0.35),
    (1280, 720, 0.12),
    (1920, 1080, 0.13),
    (2028, 1520, 0.15),
    (2592, 1944, 0.12),
    (4056, 3040, 0.13),
)


@dataclass
class PlateSample:
    """One rendered plate: the JPEG, the decoded pixels and everything true about them."""

    jpeg: bytes
    image: np.ndarray  # decoded BGR uint8, exactly what a reader of the JPEG sees
    wells: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    calibration: dict[str, Any]
    variations: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def _style(rng: np.random.Generator) -> PlateStyle:
    plate_type = "white" if rng.random() < 0.55 else "clear"
    if plate_type == "white":
        body = np.array([236, 238, 238], np.float32) * rng.uniform(0.93, 1.04)
        floor_shade, rim_dark = rng.uniform(0.04, 0.12), rng.uniform(0.2, 0.4)
    else:
        # A clear plate shows the holder's light box through it: bright, sometimes bluish.
        tint = np.array([rng.uniform(0.95, 1.08), 1.0, rng.uniform(0.9, 1.0)], np.float32)
        body = 228 * tint * rng.uniform(0.9, 1.05)
        floor_shade, rim_dark = rng.uniform(0.02, 0.08), rng.uniform(0.3, 0.55)
    # Red cells: transmission per channel (B, G, R). Dense buttons let little but red through.
    dark = np.array(
        [rng.uniform(0.1, 0.28), rng.uniform(0.08, 0.24), rng.uniform(0.45, 0.7)], np.float32
    )
    mat = np.array(
        [rng.uniform(0.45, 0.7), rng.uniform(0.4, 0.65), rng.uniform(0.82, 0.97)], np.float32
    )
    return PlateStyle(
        plate_type=plate_type,
        body=np.minimum(body, 255).astype(np.float32),
        floor_shade=float(floor_shade),
        rim_dark=float(rim_dark),
        light_angle=float(rng.uniform(-np.pi, np.pi)),
        cells_dark=dark,
        cells_mat=mat,
        liquid_alpha=float(rng.uniform(0.03, 0.18)),
        tilt_angle=float(rng.normal(0.0, 0.06)),
    )


def _draw_plate(
    wells: list[WellSpec],
    style: PlateStyle,
    scale: float,
    radius_mm: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The flat plate at `scale` px/mm, plus its coverage mask (1 on plastic)."""
    cw, ch = int(np.ceil(PLATE_W_MM * scale)), int(np.ceil(PLATE_H_MM * scale))
    canvas = np.empty((ch, cw, 3), np.float32)
    canvas[:] = style.body
    # A faint large-scale unevenness in the plastic / light box.
    canvas *= (
        1.0
        + 0.03
        * cv2.resize(
            rng.standard_normal((6, 9)).astype(np.float32), (cw, ch), interpolation=cv2.INTER_CUBIC
        )[..., None]
    )
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
    # Raised skirt: a darker band along the edge of the plate.
    edge = cv2.erode(mask, np.ones((max(3, int(1.2 * scale)),) * 2, np.uint8))
    canvas *= (0.86 + 0.14 * edge)[..., None]
    # Embossed row letters and column numbers, a shade darker than the plastic.
    font_scale = 0.085 * scale
    thick = max(1, int(0.12 * scale))
    text = np.zeros((ch, cw), np.uint8)
    for r in range(N_ROWS):
        y = (A1_Y_MM + r * PITCH_MM) * scale
        org = (int(5.5 * scale), int(y + 1.3 * scale))
        cv2.putText(
            text, ROW_LABELS[r], org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thick, cv2.LINE_AA
        )
    for c in range(N_COLS):
        x = (A1_X_MM + c * PITCH_MM) * scale
        org = (int(x - 1.5 * scale), int(6.0 * scale))
        cv2.putText(
            text, str(c + 1), org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thick, cv2.LINE_AA
        )
    canvas *= (1.0 - 0.18 * text.astype(np.float32) / 255.0)[..., None]
    radius = radius_mm * scale
    for spec in wells:
        cx = (A1_X_MM + spec.col * PITCH_MM) * scale
        cy = (A1_Y_MM + spec.row * PITCH_MM) * scale
        draw_well(canvas, cx, cy, radius, spec, style, rng)
    return canvas, mask


def _homography(
    rng: np.random.Generator, frame_w: int, frame_h: int, scale: float
) -> tuple[np.ndarray, dict[str, float]]:
    """Canvas px -> frame px: the grid's corners placed with fill, shift, rotation, perspective."""
    grid_w_mm, grid_h_mm = N_COLS * PITCH_MM, N_ROWS * PITCH_MM
    fill = float(rng.uniform(0.78, 0.95))
    px_per_mm = min(fill * frame_w / grid_w_mm, fill * frame_h / grid_h_mm)
    rot = float(rng.uniform(-1.5, 1.5))
    # Grid rectangle corners in canvas pixels.
    gx0, gy0 = (A1_X_MM - PITCH_MM / 2) * scale, (A1_Y_MM - PITCH_MM / 2) * scale
    src = np.array(
        [
            [gx0, gy0],
            [gx0 + grid_w_mm * scale, gy0],
            [gx0 + grid_w_mm * scale, gy0 + grid_h_mm * scale],
            [gx0, gy0 + grid_h_mm * scale],
        ],
        np.float32,
    )
    half = np.array([grid_w_mm, grid_h_mm]) * px_per_mm / 2
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
    # Keystone: each corner moves up to ~1.2 % of the grid size.
    local += rng.uniform(-0.012, 0.012, size=(4, 2)) * (2 * half)
    a = np.deg2rad(rot)
    rmat = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    local = local @ rmat.T
    # Shift within the room the frame leaves (at least 1.5 % margin on each side).
    lo = local.min(axis=0)
    hi = local.max(axis=0)
    margin = 0.015 * np.array([frame_w, frame_h])
    cx_lo, cx_hi = margin[0] - lo[0], frame_w - margin[0] - hi[0]
    cy_lo, cy_hi = margin[1] - lo[1], frame_h - margin[1] - hi[1]
    centre = np.array(
        [
            rng.uniform(min(cx_lo, cx_hi), max(cx_lo, cx_hi)),
            rng.uniform(min(cy_lo, cy_hi), max(cy_lo, cy_hi)),
        ]
    )
    dst = (local + centre).astype(np.float32)
    hmat = cv2.getPerspectiveTransform(src, dst)
    return hmat, {"rotation_deg": rot, "fill": fill, "px_per_mm": px_per_mm}


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """The holder around the plate: dark or mid grey/blue with a gentle gradient."""
    base = np.array(
        rng.choice([[40, 40, 42], [70, 70, 72], [90, 60, 40], [150, 150, 150]]), np.float32
    )
    base *= rng.uniform(0.7, 1.2)
    grad = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.2), w, dtype=np.float32)
    return np.broadcast_to(base, (h, w, 3)) * grad[None, :, None]


def _spoil(
    rng: np.random.Generator, img: np.ndarray, ref_scale: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lighting gradient, vignette, colour cast, exposure, defocus, noise. Returns uint8."""
    h, w = img.shape[:2]
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    gdir = rng.uniform(0, 2 * np.pi)
    gradient = float(rng.uniform(0.0, 0.25))
    vignette = float(rng.uniform(0.0, 0.3))
    light = 1.0 + gradient * (np.cos(gdir) * xx + np.sin(gdir) * yy) / 2
    light = light - vignette * (xx * xx + yy * yy) / 2
    cast = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    if rng.random() < 0.25:
        cast[:] = 1.0
    exposure = float(rng.uniform(0.72, 1.12))
    img *= light[..., None]
    img *= (cast * exposure)[None, None, :]
    gamma = float(rng.uniform(0.8, 1.25))
    np.clip(img, 0, 255, out=img)
    img = 255.0 * (img / 255.0) ** gamma
    blur = 0.0 if rng.random() < 0.3 else float(rng.uniform(0.4, 3.0))
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur * ref_scale)
    noise = 0.0 if rng.random() < 0.25 else float(rng.uniform(1.0, 10.0))
    if noise > 0:
        img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    meta = {
        "gradient": gradient,
        "vignette": vignette,
        "colour_cast": float(np.max(np.abs(cast - 1.0))),
        "exposure": exposure,
        "gamma": gamma,
        "blur_sigma": blur,
        "noise_sigma": noise,
    }
    return out, meta


def _legacy_calibration(centres: np.ndarray, w: int, h: int) -> dict[str, Any]:
    """Old-format grid: lines midway between mean well centres, half a pitch outside the ends."""
    col_x = centres[..., 0].mean(axis=0)  # (N_COLS,)
    row_y = centres[..., 1].mean(axis=1)  # (N_ROWS,)
    cols = np.concatenate(
        [
            [1.5 * col_x[0] - 0.5 * col_x[1]],
            (col_x[:-1] + col_x[1:]) / 2,
            [1.5 * col_x[-1] - 0.5 * col_x[-2]],
        ]
    )
    rows = np.concatenate(
        [
            [1.5 * row_y[0] - 0.5 * row_y[1]],
            (row_y[:-1] + row_y[1:]) / 2,
            [1.5 * row_y[-1] - 0.5 * row_y[-2]],
        ]
    )
    cols = np.clip(np.round(cols, 1), 0, w - 1)
    rows = np.clip(np.round(rows, 1), 0, h - 1)
    return {
        "bounds": {
            "left": float(cols[0]),
            "right": float(cols[-1]),
            "top": float(rows[0]),
            "bottom": float(rows[-1]),
        },
        "columns": [float(x) for x in cols],
        "rows": [float(y) for y in rows],
        "image_width": w,
        "image_height": h,
        "format_version": 3,
    }


def render_plate(
    seed: int,
    index: int,
    *,
    resolution: tuple[int, int] | None = None,
    jpeg_quality: int | None = None,
) -> PlateSample:
    """Render plate `index` of the stream `seed`; the same pair always gives the same bytes."""
    rng = np.random.default_rng([seed, index])
    if resolution is None:
        weights = np.array([r[2] for r in RESOLUTIONS])
        pick = int(rng.choice(len(RESOLUTIONS), p=weights / weights.sum()))
        resolution = (RESOLUTIONS[pick][0], RESOLUTIONS[pick][1])
    frame_w, frame_h = resolution
    specs, row_specs = plate_pattern(rng, N_ROWS, N_COLS)
    style = _style(rng)
    radius_mm = float(rng.uniform(3.2, 3.6))
    # Render the flat plate at about the frame's own scale so the warp is close to 1:1.
    approx_scale = min(frame_w / (N_COLS * PITCH_MM), frame_h / (N_ROWS * PITCH_MM)) * 0.9
    hmat, geo = _homography(rng, frame_w, frame_h, approx_scale)
    canvas, mask = _draw_plate(specs, style, approx_scale, radius_mm, rng)
    frame = _background(rng, frame_w, frame_h).copy()
    warped = cv2.warpPerspective(canvas, hmat, (frame_w, frame_h), flags=cv2.INTER_LINEAR)
    cover = cv2.warpPerspective(mask, hmat, (frame_w, frame_h), flags=cv2.INTER_LINEAR)[..., None]
    frame = frame * (1.0 - cover) + warped * cover
    ref_scale = frame_w / 1700.0
    image, photo = _spoil(rng, frame.astype(np.float32), ref_scale)
    quality = int(jpeg_quality if jpeg_quality is not None else rng.integers(35, 96))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    jpeg = buf.tobytes()
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)

    wells, centres = _well_truth(specs, hmat, approx_scale, radius_mm)
    rows = _row_truth(specs, row_specs)
    variations = {
        "resolution": f"{frame_w}x{frame_h}",
        "plate_type": style.plate_type,
        "jpeg_quality": quality,
        "invalid_wells": sum(1 for s in specs if s.state == "invalid"),
        **geo,
        **photo,
    }
    return PlateSample(
        jpeg=jpeg,
        image=decoded,
        wells=wells,
        rows=rows,
        calibration=_legacy_calibration(centres, frame_w, frame_h),
        variations=variations,
    )


def _well_truth(
    specs: list[WellSpec], hmat: np.ndarray, scale: float, radius_mm: float
) -> tuple[list[dict[str, Any]], np.ndarray]:
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius_mm * 1.02
    centres = np.zeros((N_ROWS, N_COLS, 2))
    wells = []
    for spec in specs:
        c_mm = np.array([A1_X_MM + spec.col * PITCH_MM, A1_Y_MM + spec.row * PITCH_MM])
        pts = np.vstack([c_mm[None, :], c_mm + circle]) * scale
        warped = cv2.perspectiveTransform(pts[None].astype(np.float64), hmat)[0]
        centres[spec.row, spec.col] = warped[0]
        x1, y1 = warped[1:].min(axis=0)
        x2, y2 = warped[1:].max(axis=0)
        wells.append(
            {
                "well_id": f"{ROW_LABELS[spec.row]}{spec.col + 1}",
                "row": spec.row,
                "col": spec.col,
                "state": spec.state,
                "class_id": CLASS_ID[spec.state],
                "kind": spec.kind,
                "box": [round(float(v), 2) for v in (x1, y1, x2, y2)],
                "center": [round(float(v), 2) for v in warped[0]],
            }
        )
    return wells, centres


def _row_truth(specs: list[WellSpec], row_specs: list[RowSpec]) -> list[dict[str, Any]]:
    rows = []
    for rs in row_specs:
        states = [s.state for s in specs if s.row == rs.row]
        end = true_endpoint(states)
        rows.append(
            {
                "row": rs.row,
                "label": ROW_LABELS[rs.row],
                "endpoint": end,
                "pattern_endpoint": rs.pattern_endpoint,
                "skipped_cols": list(rs.skipped_cols),
                "states": states,
            }
        )
    return rows
