"""Drawing one well: rim, floor, liquid and its contents (button, mat, bubble, debris).

Red cells are drawn as absorbers (multiplying the light behind them by a per-channel
transmission), not painted on, so a cell layer over a white plate, a clear plate or a coloured
cast all darken the way a real translucent layer does. Coordinates inside a well are in units of
the well radius with +v pointing down the image: the direction the plate was tilted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.synth.patterns import WellSpec


@dataclass(frozen=True)
class PlateStyle:
    """Per-plate appearance shared by every well, so a plate looks like one plate."""

    plate_type: str  # "white" or "clear"
    body: np.ndarray  # BGR 0..255 float32: the plastic (or what shows through it)
    floor_shade: float  # how much darker the well floor is than the body
    rim_dark: float  # strength of the rim's dark ring
    light_angle: float  # radians, where the light comes from (rim highlight/shadow)
    cells_dark: np.ndarray  # per-channel transmission of a dense cell button
    cells_mat: np.ndarray  # per-channel transmission of a spread cell layer
    liquid_alpha: float  # how tinted the supernatant is
    tilt_angle: float  # radians from straight down (the streak direction)


def _smooth_inside(dist_to_edge: np.ndarray, soft: float) -> np.ndarray:
    """1 inside, 0 outside, a soft ramp of width `soft` across the edge (dist > 0 is inside)."""
    return np.clip(dist_to_edge / max(soft, 1e-6) + 0.5, 0.0, 1.0)


def _absorb(patch: np.ndarray, alpha: np.ndarray, transmission: np.ndarray) -> None:
    patch *= 1.0 - alpha[..., None] * (1.0 - transmission[None, None, :])


def _noise_field(rng: np.random.Generator, shape: tuple[int, int], blur: float) -> np.ndarray:
    """Smooth zero-mean noise of unit-ish amplitude: the grain of a cell layer."""
    field = rng.standard_normal(shape).astype(np.float32)
    k = max(1.0, blur)
    field = cv2.GaussianBlur(field, (0, 0), k)
    return field / (float(field.std()) + 1e-6)


def draw_well(
    canvas: np.ndarray,
    cx: float,
    cy: float,
    radius: float,
    spec: WellSpec,
    style: PlateStyle,
    rng: np.random.Generator,
) -> None:
    """Render one well in place on `canvas` (float32 BGR, 0..255)."""
    half = int(np.ceil(radius * 1.25)) + 2
    x0, y0 = int(cx) - half, int(cy) - half
    x1, y1 = x0 + 2 * half, y0 + 2 * half
    h, w = canvas.shape[:2]
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError("well patch leaves the plate canvas")
    patch = canvas[y0:y1, x0:x1]
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u = (xs + 0.5 - cx) / radius
    v = (ys + 0.5 - cy) / radius
    rho = np.sqrt(u * u + v * v)
    px = 1.0 / radius  # one pixel in well units: edges are about a pixel soft before any blur

    _draw_floor_and_rim(patch, u, v, rho, px, style, rng)
    inside = _smooth_inside(0.93 - rho, 2 * px)

    if spec.kind != "empty":
        liquid = style.liquid_alpha * float(rng.uniform(0.6, 1.4))
        _absorb(patch, liquid * inside, style.cells_mat)

    if spec.kind == "button":
        _draw_button(patch, u, v, px, inside, style, rng)
    elif spec.kind == "mat":
        _draw_mat(patch, u, v, rho, px, inside, style, rng)
    elif spec.kind == "bubble":
        if rng.random() < 0.5:
            _draw_mat(patch, u, v, rho, px, inside, style, rng, faint=True)
        _draw_bubble(patch, u, v, px, inside, rng)
    elif spec.kind == "debris":
        if rng.random() < 0.4:
            _draw_mat(patch, u, v, rho, px, inside, style, rng, faint=True)
        _draw_debris(patch, radius, inside, rng)
    elif spec.kind == "empty":
        # A dry well catches a little more light; nothing else is in it.
        glint = 0.06 * np.exp(-((u + 0.3) ** 2 + (v + 0.3) ** 2) / 0.08)
        patch += (255.0 - patch) * (glint * inside)[..., None]
    np.clip(patch, 0.0, 255.0, out=patch)


def _draw_floor_and_rim(
    patch: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    rho: np.ndarray,
    px: float,
    style: PlateStyle,
    rng: np.random.Generator,
) -> None:
    angle = np.arctan2(v, u)
    facing = np.cos(angle - style.light_angle)  # +1 on the lit side of the rim
    # The floor of a V/U well is a shallow cone: slightly darker towards the wall away from the
    # light, a little brighter at the centre.
    floor = 1.0 - style.floor_shade * (0.6 + 0.4 * rho - 0.25 * facing * rho)
    inside = _smooth_inside(1.0 - rho, 1.5 * px)
    shade = 1.0 + (floor - 1.0) * inside
    # Dark ring at the wall, heavier on the shadow side; a thin highlight on the lit side.
    ring = np.exp(-(((rho - 0.97) / (0.045 + 1.5 * px)) ** 2))
    shade -= style.rim_dark * ring * (0.75 - 0.35 * facing)
    outer = np.exp(-(((rho - 1.06) / (0.03 + px)) ** 2))
    shade += 0.07 * outer * np.clip(facing, 0, 1)
    # A soft cast shadow just outside the well on the far side from the light.
    cast = np.exp(-(((rho - 1.12) / 0.08) ** 2)) * np.clip(-facing, 0, 1)
    shade -= 0.08 * cast * float(rng.uniform(0.5, 1.0))
    patch *= shade[..., None]


def _draw_button(
    patch: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    px: float,
    inside: np.ndarray,
    style: PlateStyle,
    rng: np.random.Generator,
) -> None:
    """Flowing: a compact dark button with a tear-drop streak running down (the tilt)."""
    rb = float(rng.uniform(0.15, 0.28))
    bu = float(rng.normal(0.0, 0.06))
    bv = float(rng.uniform(-0.45, -0.12))
    strength = float(rng.uniform(0.8, 1.0))
    theta = style.tilt_angle + float(rng.normal(0.0, 0.08))
    du, dv = np.sin(theta), np.cos(theta)  # streak direction, mostly +v (down)
    length = float(rng.uniform(0.66, 1.33))  # a third to two thirds of the well diameter (2.0)
    # Keep the tip inside the well wall.
    tip_v = bv + dv * length
    if tip_v > 0.88:
        length *= max(0.3, (0.88 - bv) / max(tip_v - bv, 1e-6))
    curve = float(rng.normal(0.0, 0.08))
    # Position along (t in 0..1) and across (p) the streak axis, with a slight bend.
    au, av = u - bu, v - bv
    along = au * du + av * dv
    t = along / length
    across = au * dv - av * du - curve * np.clip(t, 0, 1) ** 2
    width = rb * (0.8 * np.clip(1.0 - t, 0.0, 1.0) ** 0.8 + 0.12)
    fade = np.clip(1.0 - 0.65 * t, 0.0, 1.0) * float(rng.uniform(0.55, 0.85))
    streak = _smooth_inside(width - np.abs(across), 2 * px) * fade
    streak *= _smooth_inside(np.minimum(t, 1.0 - t) * length, 2 * px)
    d_button = np.sqrt(au * au + av * av)
    button = _smooth_inside(rb - d_button, max(2 * px, 0.25 * rb)) * strength
    # Denser at the centre of the button, as packed cells are.
    button *= 0.85 + 0.15 * np.exp(-((d_button / (0.6 * rb)) ** 2))
    alpha = np.maximum(button, streak) * inside
    _absorb(patch, alpha, style.cells_dark)


def _draw_mat(
    patch: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    rho: np.ndarray,
    px: float,
    inside: np.ndarray,
    style: PlateStyle,
    rng: np.random.Generator,
    *,
    faint: bool = False,
) -> None:
    """Agglutinated: an even pink-red disc over most of the floor, no streak."""
    rm = float(rng.uniform(0.62, 0.88))
    mu, mv = rng.normal(0.0, 0.04, size=2)
    au, av = u - mu, v - mv
    r = np.sqrt(au * au + av * av)
    ang = np.arctan2(av, au)
    ragged = rng.random() < 0.5
    edge = np.full_like(r, rm)
    if ragged:
        for k in (3, 5, 7, 11):
            edge += rm * float(rng.uniform(0.01, 0.04)) * np.sin(k * ang + rng.uniform(0, 6.3))
    soft = float(rng.uniform(0.04, 0.14))
    strength = float(rng.uniform(0.45, 0.85)) * (0.35 if faint else 1.0)
    grain = _noise_field(rng, r.shape, blur=max(1.0, 0.04 / px))
    alpha = _smooth_inside(edge - r, soft) * strength * (1.0 + 0.12 * grain)
    if not faint and rng.random() < 0.45:
        # A slightly darker rim where the lattice piles up.
        alpha += 0.25 * strength * np.exp(-(((r - edge + 0.04) / 0.05) ** 2))
    alpha = np.clip(alpha, 0.0, 1.0) * inside
    tint = style.cells_mat * float(rng.uniform(0.92, 1.05))
    _absorb(patch, alpha, np.clip(tint, 0.0, 1.0))


def _draw_bubble(
    patch: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    px: float,
    inside: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """A bubble: bright lens with a dark meniscus ring and a specular highlight."""
    rb = float(rng.uniform(0.35, 0.72))
    limit = max(0.0, 0.9 - rb)
    bu, bv = rng.uniform(-limit, limit, size=2)
    d = np.sqrt((u - bu) ** 2 + (v - bv) ** 2)
    disc = _smooth_inside(rb - d, 2 * px)
    ring = np.exp(-(((d - rb) / (0.05 + px)) ** 2)) * float(rng.uniform(0.45, 0.8))
    lens = disc * float(rng.uniform(0.25, 0.5))
    hx, hy = bu - 0.35 * rb, bv - 0.35 * rb
    spec = np.exp(-(((u - hx) ** 2 + (v - hy) ** 2) / (0.02 * rb * rb + px * px)))
    patch += (255.0 - patch) * ((lens + 0.9 * spec) * inside)[..., None]
    patch *= 1.0 - (ring * inside)[..., None]


def _draw_debris(
    patch: np.ndarray, radius: float, inside: np.ndarray, rng: np.random.Generator
) -> None:
    """Debris: dark grey fibres and specks, not red."""
    size = patch.shape[0]
    mask = np.zeros(patch.shape[:2], np.float32)
    centre = size / 2.0
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.6:
            # A fibre: a short random walk.
            n = int(rng.integers(4, 9))
            pt = centre + rng.uniform(-0.5, 0.5, size=2) * radius
            heading = rng.uniform(0, 2 * np.pi)
            pts = [pt.copy()]
            for _ in range(n):
                heading += rng.normal(0.0, 0.5)
                pt = pt + radius * 0.18 * np.array([np.cos(heading), np.sin(heading)])
                pts.append(pt.copy())
            poly = (np.array(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
            thick = max(1, int(radius * rng.uniform(0.04, 0.1)))
            cv2.polylines(mask, [poly], False, 1.0, thick, cv2.LINE_AA, shift=4)
        else:
            # A speck or crumb.
            c = centre + rng.uniform(-0.55, 0.55, size=2) * radius
            axes = (max(1, int(radius * rng.uniform(0.06, 0.2))),) * 2
            axes = (axes[0], max(1, int(axes[1] * rng.uniform(0.5, 1.0))))
            cv2.ellipse(
                mask,
                (int(c[0] * 16), int(c[1] * 16)),
                (axes[0] * 16, axes[1] * 16),
                float(rng.uniform(0, 180)),
                0,
                360,
                1.0,
                -1,
                cv2.LINE_AA,
                shift=4,
            )
    darkness = float(rng.uniform(0.55, 0.85))
    grey = np.array([0.35, 0.38, 0.42], np.float32) * float(rng.uniform(0.6, 1.2))
    _absorb(patch, np.clip(mask, 0, 1) * darkness * inside, np.clip(grey, 0, 1))
