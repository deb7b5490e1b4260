"""Generator v2: what one plate looks like (light, plastic, walls, cells, reading mode).

Every number here is a range drawn per plate, wide on purpose: the classifier must not learn one
lab's set-up. The ranges come from the appearance study in ``models/synth/README.md`` (saturated
green and white light boxes, clear plates whose thick walls refract the light into bright rims
with dark double rings, dark-walled plates on white boxes, opaque white plates, maroon tear-drops,
salmon mats), widened well beyond what the study saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

READING_MODES: tuple[str, ...] = ("tilted", "untilted")

# Backlights, BGR 0..255 (before exposure and cast): a saturated green box like the reference
# system's, white and grey light boxes, a bluish and a warm one, a pale green.
BACKLIGHTS: tuple[tuple[str, tuple[float, float, float], float], ...] = (
    ("green", (95.0, 215.0, 120.0), 0.26),
    ("pale-green", (170.0, 235.0, 180.0), 0.08),
    ("white", (242.0, 242.0, 242.0), 0.3),
    ("grey", (170.0, 172.0, 170.0), 0.14),
    ("blue", (235.0, 205.0, 175.0), 0.08),
    ("warm", (200.0, 228.0, 245.0), 0.07),
    ("dark", (60.0, 60.0, 62.0), 0.07),
)


@dataclass(frozen=True)
class PlateLook:
    """Per-plate appearance shared by every well, so a plate looks like one plate."""

    mode: str  # "tilted" or "untilted"
    backlight_name: str
    backlight: np.ndarray  # BGR float32: the light around the plate
    plate_type: str  # "clear" or "white"
    body: np.ndarray  # BGR float32: the plastic between wells
    well_radius_mm: float  # outer radius of a well's wall (pitch is 9 mm)
    wall_width: float  # wall thickness as a share of the outer radius
    wall_tone: float  # < 0: dark wall (dark-walled plate); > 0: bright refracting rim
    ring_dark: float  # strength of the dark lines at the wall's two edges
    specular: float  # strength of the specular arc on the wall
    wall_tint: np.ndarray  # BGR the bright walls refract towards (white, lavender, bluish)
    tip_glint: float  # the bright point/ring at the bottom of a V or U floor
    glare_rate: float  # share of wells with a small reflection on the liquid
    light_angle: float  # radians: where the highlight sits
    floor_shade: float  # floor brightness factor (a clear floor passes most light)
    cells_dark: np.ndarray  # per-channel transmission of a packed button (BGR)
    cells_mat: np.ndarray  # per-channel transmission of a spread cell layer (BGR)
    liquid_alpha: float  # tint of the supernatant
    tilt_angle: float  # radians from image-down: the direction tear-drops run (tilted mode)


def _pick_backlight(rng: np.random.Generator, mode: str) -> tuple[str, np.ndarray]:
    names = [b[0] for b in BACKLIGHTS]
    weights = np.array([b[2] for b in BACKLIGHTS])
    # Tilted plates are read on a light box more often than untilted ones, which are often
    # photographed on a bench; both see every light.
    if mode == "untilted":
        weights = weights * np.array([0.5, 0.8, 1.4, 1.2, 1.0, 1.0, 1.4])
    pick = int(rng.choice(len(names), p=weights / weights.sum()))
    base = np.array(BACKLIGHTS[pick][1], np.float32)
    jitter = rng.uniform(0.85, 1.08, size=3).astype(np.float32)
    return names[pick], np.clip(base * jitter * rng.uniform(0.85, 1.05), 0, 255)


def sample_look(rng: np.random.Generator, mode: str) -> PlateLook:
    if mode not in READING_MODES:
        raise ValueError(f"reading mode {mode!r} is not one of {READING_MODES}")
    name, light = _pick_backlight(rng, mode)
    clear = rng.random() < 0.8
    if clear:
        # Clear plastic passes the light box with a little whitening and loss.
        whiten = float(rng.uniform(0.0, 0.3))
        body = light * rng.uniform(0.88, 1.0) + (245.0 - light) * whiten
    else:
        body = np.array([236, 238, 238], np.float32) * rng.uniform(0.85, 1.03)
    wall_tone = float(rng.uniform(-0.75, 0.6))
    if name == "dark":
        wall_tone = abs(wall_tone)  # walls catch light over a dark bench
    dark = np.array(
        [rng.uniform(0.04, 0.3), rng.uniform(0.03, 0.22), rng.uniform(0.18, 0.7)], np.float32
    )
    mat = np.array(
        [rng.uniform(0.4, 0.78), rng.uniform(0.35, 0.72), rng.uniform(0.8, 1.0)], np.float32
    )
    tilt = float(rng.normal(0.0, 0.25))
    if rng.random() < 0.12:
        tilt += float(rng.choice([np.pi, np.pi / 2, -np.pi / 2]))
    return PlateLook(
        mode=mode,
        backlight_name=name,
        backlight=light.astype(np.float32),
        plate_type="clear" if clear else "white",
        body=np.clip(body, 0, 255).astype(np.float32),
        well_radius_mm=float(rng.uniform(3.2, 4.35)),
        wall_width=float(rng.uniform(0.06, 0.34)),
        wall_tone=wall_tone,
        ring_dark=float(rng.uniform(0.05, 0.7)),
        specular=float(rng.uniform(0.0, 0.9)),
        wall_tint=np.array(
            [rng.uniform(225, 255), rng.uniform(215, 250), rng.uniform(220, 250)], np.float32
        ),
        tip_glint=float(rng.uniform(0.0, 0.5 if mode == "tilted" else 0.25)),
        glare_rate=float(rng.choice([0.0, 0.1, 0.4])),
        light_angle=float(rng.uniform(-np.pi, np.pi)),
        floor_shade=float(rng.uniform(0.72, 1.04)),
        cells_dark=dark,
        cells_mat=mat,
        liquid_alpha=float(rng.uniform(0.0, 0.15)),
        tilt_angle=tilt,
    )
