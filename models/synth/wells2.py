"""Generator v2: drawing one well in either reading mode.

Coordinates inside a well are in units of the wall's outer radius; ``f`` is the floor radius
(inside the wall). Red cells are absorbers that multiply the light behind them by a per-channel
transmission, so the same cells look maroon on a white box and near-black on a green one.

What each class looks like (see ``models/synth/README.md``):

* tilted ``flowing``: a short, blunt, dark tear-drop running in the tilt direction;
  tilted ``agglutinated``: a near-clear well: a faint film, a faint ring or a weak mat, no streak.
* untilted ``flowing``: a compact round red button; untilted ``agglutinated``: a smooth salmon
  mat (shield) over most of the floor.
* ``invalid`` (both): empty or dry wells (no red cells), bubbles, debris or pen marks that hide
  the floor (each covers at least a tenth of it). A defect that leaves the cells readable (a thin
  fibre, a speck) goes on readable wells, which keep their real label.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.synth.look import PlateLook

KINDS: dict[tuple[str, str], tuple[tuple[str, float], ...]] = {
    ("tilted", "flowing"): (("teardrop", 1.0),),
    ("tilted", "agglutinated"): (("clear", 0.35), ("ring", 0.3), ("film", 0.2), ("weakmat", 0.15)),
    ("untilted", "flowing"): (("button", 1.0),),
    ("untilted", "agglutinated"): (("mat", 0.7), ("shield", 0.3)),
    ("any", "invalid"): (
        ("empty", 0.4),
        ("dry", 0.15),
        ("bubble", 0.15),
        ("debris", 0.15),
        ("pen", 0.15),
    ),
}


# Share of readable wells with a thin fibre or a speck that leaves them readable.
SPECK_RATE = 0.04


def pick_kind(rng: np.random.Generator, mode: str, state: str) -> str:
    options = KINDS[("any", "invalid")] if state == "invalid" else KINDS[(mode, state)]
    names = [k for k, _ in options]
    p = np.array([w for _, w in options])
    return str(names[int(rng.choice(len(names), p=p / p.sum()))])


def _inside(dist: np.ndarray, soft: float) -> np.ndarray:
    """1 inside, 0 outside, a soft ramp of width ``soft`` across the edge (dist > 0 inside)."""
    return np.clip(dist / max(soft, 1e-6) + 0.5, 0.0, 1.0)


def _absorb(patch: np.ndarray, alpha: np.ndarray, transmission: np.ndarray) -> None:
    patch *= 1.0 - alpha[..., None] * (1.0 - transmission[None, None, :])


def _grain(rng: np.random.Generator, shape: tuple[int, int], blur: float) -> np.ndarray:
    k = max(1.0, blur)
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), k)
    # White noise blurred by a Gaussian of sigma k has std 1 / (2 sqrt(pi) k): no pass needed.
    return field * np.float32(2.0 * np.sqrt(np.pi) * k)


def draw_well(
    canvas: np.ndarray,
    cx: float,
    cy: float,
    radius: float,
    state: str,
    kind: str,
    look: PlateLook,
    rng: np.random.Generator,
    shift: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Render one well in place on ``canvas`` (float32 BGR 0..255).

    ``shift``: where the camera sees the well's floor against its opening, in units of the
    wall's outer radius (parallax: the floor lies about 10 mm below the opening, so a camera
    above the plate sees it displaced towards the point under the lens, and the inner wall on
    the far side as a crescent). The floor and everything on it move; the part of the floor
    that leaves the opening is hidden by the wall. It is capped at 0.8 of the opening's radius."""
    half = int(np.ceil(radius * 1.2)) + 2
    x0, y0 = int(cx) - half, int(cy) - half
    h, w = canvas.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + 2 * half > w or y0 + 2 * half > h:
        raise ValueError("well patch leaves the plate canvas")
    patch = canvas[y0 : y0 + 2 * half, x0 : x0 + 2 * half]
    ys, xs = np.mgrid[y0 : y0 + 2 * half, x0 : x0 + 2 * half].astype(np.float32)
    u = (xs + 0.5 - cx) / radius
    v = (ys + 0.5 - cy) / radius
    px = 1.0 / radius
    f = 1.0 - look.wall_width * float(rng.uniform(0.9, 1.1))
    su, sv = shift
    size = float(np.hypot(su, sv))
    if size > 0.8 * f:
        su, sv = su * 0.8 * f / size, sv * 0.8 * f / size
    _wall_and_floor(patch, u, v, f, px, look, rng, (su, sv))
    # Floor coordinates: 1.0 at the inner face of the wall, centred where the floor is seen.
    uf, vf = (u - su) / f, (v - sv) / f
    floor = _inside(0.97 - np.sqrt(uf * uf + vf * vf), 2 * px / f)
    if su or sv:  # the floor is seen only through the opening
        floor = floor * _inside(f - np.sqrt(u * u + v * v), 2 * px)
    if kind not in ("empty", "dry"):
        _absorb(patch, look.liquid_alpha * float(rng.uniform(0.5, 1.5)) * floor, look.cells_mat)
    draw = _DRAWERS[kind]
    draw(patch, uf, vf, px / f, floor, look, rng)
    if state != "invalid" and rng.random() < SPECK_RATE:
        _speck(patch, uf, vf, px / f, floor, rng)
    if rng.random() < look.glare_rate:
        _glare(patch, uf, vf, floor, rng)
    np.clip(patch, 0.0, 255.0, out=patch)


def _glare(patch: np.ndarray, u: np.ndarray, v: np.ndarray, floor: np.ndarray, rng) -> None:  # type: ignore[no-untyped-def]
    """A lamp reflected on the liquid: a small bright streak anywhere on the floor."""
    a = float(rng.uniform(0, np.pi))
    gu, gv = rng.uniform(-0.5, 0.5, size=2)
    along = (u - gu) * np.cos(a) + (v - gv) * np.sin(a)
    across = -(u - gu) * np.sin(a) + (v - gv) * np.cos(a)
    lx, ly = float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.03, 0.1))
    spot = np.exp(-((along / lx) ** 2 + (across / ly) ** 2)) * float(rng.uniform(0.3, 0.9))
    patch += (255.0 - patch) * (spot * floor)[..., None]


def _wall_and_floor(
    patch: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    f: float,
    px: float,
    look: PlateLook,
    rng: np.random.Generator,
    shift: tuple[float, float] = (0.0, 0.0),
) -> None:
    rho = np.sqrt(u * u + v * v)
    facing = np.cos(np.arctan2(v, u) - look.light_angle)
    wall = _inside(1.0 - rho, 1.5 * px) * _inside(rho - f, 1.5 * px)
    floor = _inside(f - rho, 1.5 * px)
    parallax = bool(shift[0] or shift[1])
    if parallax:
        # The floor as the camera sees it; between it and the opening, the inner wall.
        rho_f = np.sqrt((u - shift[0]) ** 2 + (v - shift[1]) ** 2)
        seen = floor * _inside(f - rho_f, 1.5 * px)
        wall = np.maximum(wall, floor - seen)
        floor = seen
    tone = look.wall_tone * float(rng.uniform(0.85, 1.15))
    # Clear walls refract the light box into a pale, desaturated band; dark-walled plates
    # (on a white box) show a grey-black band. Either way brighter/darker across the wall.
    across = np.clip((rho - f) / max(1.0 - f, 1e-3), 0.0, 1.0)
    profile = wall * (0.7 + 0.3 * np.sin(np.pi * across))
    if tone > 0:
        patch += (look.wall_tint - patch) * (tone * profile)[..., None]
    else:
        patch *= (1.0 + tone * profile)[..., None]
    # The dark double ring: a line at each face of the wall.
    width = 0.025 + 1.2 * px
    rings = np.exp(-(((rho - 1.0) / width) ** 2)) + 0.8 * np.exp(-(((rho - f) / width) ** 2))
    if parallax:  # the floor's edge, seen through the opening, is a line too
        rings = rings + 0.8 * np.exp(-(((rho_f - f) / width) ** 2)) * _inside(f - rho, 1.5 * px)
    patch *= (1.0 - look.ring_dark * np.clip(rings, 0, 1) * (0.8 - 0.25 * facing))[..., None]
    # Specular arc on the lit side of the wall.
    arc = np.exp(-(((rho - (1.0 + f) / 2) / (0.04 + px)) ** 2)) * np.clip(facing, 0, 1) ** 4
    patch += (255.0 - patch) * (look.specular * arc * wall)[..., None]
    # The floor: a shallow cone, a touch darker away from the light.
    rf = rho_f if parallax else rho
    shade = look.floor_shade * (1.0 - 0.06 * rf / f + 0.04 * facing * rf / f)
    patch *= (1.0 + (shade - 1.0) * floor)[..., None]
    if look.tip_glint > 0:
        # The bottom of the V (or U) focuses the light: a small bright ring at the centre.
        rt = float(rng.uniform(0.05, 0.2)) * f
        tip = np.exp(-(((rf - rt) / (0.03 + px)) ** 2)) * look.tip_glint
        if parallax:
            tip = tip * floor
        patch += (255.0 - patch) * (tip * float(rng.uniform(0.5, 1.0)))[..., None]


def _teardrop(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Tilted flowing: a dense button with a short blunt streak in the tilt direction."""
    theta = look.tilt_angle + float(rng.normal(0.0, 0.12))
    du, dv = np.sin(theta), np.cos(theta)
    rb = float(rng.uniform(0.12, 0.34))
    start = float(rng.uniform(-0.3, 0.2))  # button centre along the tilt axis
    side = float(rng.normal(0.0, 0.07))
    bu, bv = du * start + dv * side, dv * start - du * side
    length = float(rng.uniform(0.1, 0.8))
    length = min(length, max(0.05, 0.85 - start - rb * 0.5))
    au, av = u - bu, v - bv
    along = au * du + av * dv
    across = au * dv - av * du
    t = np.clip(along / max(length, 1e-3), 0.0, 1.0)
    taper = float(rng.uniform(0.15, 0.9))  # low = blunt
    width = rb * (1.0 - taper * t)
    body = _inside(width - np.abs(across), 2 * px) * _inside(along, 2 * px)
    body *= _inside(length + width * 0.7 - along, 2 * px + 0.05)
    d = np.sqrt(au * au + av * av)
    button = _inside(rb - d, max(2 * px, float(rng.uniform(0.03, 0.2)) * rb))
    fade = 1.0 - float(rng.uniform(0.0, 0.6)) * t
    strength = float(rng.uniform(0.75, 1.0))
    alpha = np.maximum(button, body * fade) * strength
    alpha *= 1.0 + 0.08 * _grain(rng, alpha.shape, 0.05 / px)
    _absorb(patch, np.clip(alpha, 0, 1) * floor, look.cells_dark)


def _button(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Untilted flowing: a compact round button, maybe with a faint halo."""
    rb = float(rng.uniform(0.1, 0.36))
    bu, bv = rng.normal(0.0, 0.06, size=2)
    d = np.sqrt((u - bu) ** 2 + (v - bv) ** 2)
    button = _inside(rb - d, max(2 * px, float(rng.uniform(0.03, 0.25)) * rb))
    alpha = button * float(rng.uniform(0.8, 1.0))
    if rng.random() < 0.4:
        halo_r = float(rng.uniform(rb + 0.1, 0.75))
        alpha = np.maximum(alpha, _inside(halo_r - d, 0.08) * float(rng.uniform(0.04, 0.18)))
    _absorb(patch, alpha * floor, look.cells_dark)


def _mat(patch, u, v, px, floor, look, rng, *, strength=(0.35, 0.95)) -> None:  # type: ignore[no-untyped-def]
    """A spread cell layer over most of the floor (untilted mat, tilted weak mat)."""
    rm = float(rng.uniform(0.62, 1.0))
    mu, mv = rng.normal(0.0, 0.04, size=2)
    r = np.sqrt((u - mu) ** 2 + (v - mv) ** 2)
    edge = np.full_like(r, rm)
    if rng.random() < 0.35:
        ang = np.arctan2(v - mv, u - mu)
        for k in (3, 5, 7):
            edge += rm * float(rng.uniform(0.01, 0.04)) * np.sin(k * ang + rng.uniform(0, 6.3))
    a = float(rng.uniform(*strength))
    alpha = _inside(edge - r, float(rng.uniform(0.03, 0.2))) * a
    alpha *= 1.0 + float(rng.uniform(0.0, 0.15)) * _grain(rng, r.shape, 0.04 / px)
    if rng.random() < 0.4:
        # Cells pile up a little at the mat's edge.
        alpha += 0.3 * a * np.exp(-(((r - edge + 0.05) / 0.06) ** 2))
    tint = np.clip(look.cells_mat * float(rng.uniform(0.9, 1.05)), 0, 1)
    _absorb(patch, np.clip(alpha, 0, 1) * floor, tint)


def _shield(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Untilted agglutinated: a mat with a slightly denser ring (a shield), never a dot."""
    _mat(patch, u, v, px, floor, look, rng, strength=(0.35, 0.8))
    r = np.sqrt(u * u + v * v)
    rr = float(rng.uniform(0.35, 0.8))
    ring = np.exp(-(((r - rr) / float(rng.uniform(0.04, 0.1))) ** 2)) * float(
        rng.uniform(0.1, 0.35)
    )
    _absorb(patch, ring * floor, look.cells_mat)


def _tilted_mat(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    _mat(patch, u, v, px, floor, look, rng, strength=(0.15, 0.55))


def _film(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Tilted agglutinated: an even film of cells: the well looks dull, a shade redder."""
    a = float(rng.uniform(0.08, 0.6))
    alpha = a * (1.0 + 0.2 * _grain(rng, u.shape, 0.06 / px))
    _absorb(patch, np.clip(alpha, 0, 1) * floor, look.cells_mat)


def _clear(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Tilted agglutinated: near-clear, the lattice barely tints the floor; a faint spot."""
    _film(patch, u, v, px, floor, look, rng)
    if rng.random() < 0.5:
        d = np.sqrt(u * u + (v + float(rng.normal(0, 0.1))) ** 2)
        spot = _inside(float(rng.uniform(0.25, 0.6)) - d, 0.2) * float(rng.uniform(0.05, 0.22))
        _absorb(patch, spot * floor, look.cells_mat)


def _ring(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Tilted agglutinated: a faint ring of cells near the floor's edge, clear centre."""
    _film(patch, u, v, px, floor, look, rng)
    r = np.sqrt(u * u + v * v)
    rr = float(rng.uniform(0.5, 0.9))
    # A ring of settled cells is broad and soft, unlike a pen line.
    ring = np.exp(-(((r - rr) / float(rng.uniform(0.08, 0.2))) ** 2)) * float(
        rng.uniform(0.1, 0.35)
    )
    _absorb(patch, ring * floor, look.cells_mat)


def _empty(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Invalid: no cells. A dry well catches a little more light."""
    glint = float(rng.uniform(0.0, 0.12)) * np.exp(-((u + 0.3) ** 2 + (v + 0.3) ** 2) / 0.1)
    patch += (255.0 - patch) * (glint * floor)[..., None]


def _dry(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Invalid: a dried residue: grey-brown crust and specks, no red button or mat."""
    crust = np.clip(_grain(rng, u.shape, 0.08 / px), 0, None) * float(rng.uniform(0.1, 0.35))
    grey = np.array([0.55, 0.58, 0.62], np.float32) * float(rng.uniform(0.7, 1.1))
    _absorb(patch, np.clip(crust, 0, 1) * floor, np.clip(grey, 0, 1))


def _bubble(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    rb = float(rng.uniform(0.3, 0.75))
    lim = max(0.0, 0.9 - rb)
    bu, bv = rng.uniform(-lim, lim, size=2)
    d = np.sqrt((u - bu) ** 2 + (v - bv) ** 2)
    ring = np.exp(-(((d - rb) / (0.05 + px)) ** 2)) * float(rng.uniform(0.4, 0.85))
    lens = _inside(rb - d, 2 * px) * float(rng.uniform(0.15, 0.5))
    spec = np.exp(-((u - bu + 0.35 * rb) ** 2 + (v - bv + 0.35 * rb) ** 2) / (0.02 * rb * rb))
    patch += (255.0 - patch) * ((lens + 0.9 * spec) * floor)[..., None]
    patch *= 1.0 - (ring * floor)[..., None]


def _centre_px(u: np.ndarray, v: np.ndarray, px: float) -> np.ndarray:
    """The well's centre in patch pixels (x, y), from the floor coordinates."""
    return np.array([-float(u[0, 0]) / px, -float(v[0, 0]) / px])


def _floor_cover(mask: np.ndarray, floor: np.ndarray) -> float:
    """Share of the floor a mark covers."""
    return float((np.clip(mask, 0, 1) * floor).sum() / max(float(floor.sum()), 1.0))


def _stroke(
    mask: np.ndarray, centre: np.ndarray, r_px: float, rng: np.random.Generator, thick: int
) -> None:
    """One fibre: a wandering polyline that starts on the floor."""
    pts = [centre + rng.uniform(-0.6, 0.6, size=2) * r_px]
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(3, 9))):
        heading += rng.normal(0.0, 0.6)
        pts.append(pts[-1] + r_px * 0.2 * np.array([np.cos(heading), np.sin(heading)]))
    poly = (np.array(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [poly], False, 1.0, thick, cv2.LINE_AA, shift=4)


def _debris(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Invalid: dust and fibres that cover a good part of the floor (at least 12 %).

    A single thin fibre leaves the cells readable, so a well with only that keeps its real
    label (see :func:`_speck`); here the debris hides them. No compact round clump: on a dark
    or green light box that is what a button looks like."""
    if rng.random() < 0.3:
        _mat(patch, u, v, px, floor, look, rng, strength=(0.05, 0.2))
    mask = np.zeros(patch.shape[:2], np.float32)
    r_px = 1.0 / px  # the floor radius in pixels
    centre = _centre_px(u, v, px)
    target = float(rng.uniform(0.12, 0.4))
    for _ in range(12):
        if _floor_cover(mask, floor) >= target:
            break
        _stroke(mask, centre, r_px, rng, max(1, int(r_px * rng.uniform(0.06, 0.18))))
    grey = np.array([0.35, 0.38, 0.42], np.float32) * float(rng.uniform(0.5, 1.2))
    _absorb(patch, mask * float(rng.uniform(0.6, 0.95)) * floor, np.clip(grey, 0, 1))


def _speck(patch, u, v, px, floor, rng) -> None:  # type: ignore[no-untyped-def]
    """A thin fibre on a readable well: it covers little of the floor (under 4 %), the cells
    stay readable, and the well keeps its real label. (No dark dot: that is a small button.)"""
    mask = np.zeros(patch.shape[:2], np.float32)
    _stroke(mask, _centre_px(u, v, px), float(rng.uniform(0.4, 0.8)) / px, rng, 1)
    if _floor_cover(mask, floor) > 0.04:
        return
    grey = np.array([0.35, 0.38, 0.42], np.float32) * float(rng.uniform(0.5, 1.2))
    _absorb(patch, mask * float(rng.uniform(0.4, 0.9)) * floor, np.clip(grey, 0, 1))


INKS = (
    np.array([0.9, 0.35, 0.2], np.float32),  # blue
    np.array([0.25, 0.2, 0.85], np.float32),  # red
    np.array([0.15, 0.15, 0.15], np.float32),  # black
    np.array([0.3, 0.75, 0.3], np.float32),  # green
)


def _line_through(
    mask: np.ndarray, centre: np.ndarray, r_px: float, rng: np.random.Generator, thick: int
) -> None:
    """A pen line across the floor, passing near its centre."""
    a = float(rng.uniform(0, np.pi))
    d = np.array([np.cos(a), np.sin(a)])
    n = np.array([-d[1], d[0]])
    mid = centre + n * float(rng.uniform(-0.25, 0.25)) * r_px
    half = float(rng.uniform(0.7, 1.05)) * r_px
    p1, p2 = (mid - d * half) * 16, (mid + d * half) * 16
    cv2.line(
        mask,
        (int(p1[0]), int(p1[1])),
        (int(p2[0]), int(p2[1])),
        1.0,
        thick,
        cv2.LINE_AA,
        shift=4,
    )


def _pen(patch, u, v, px, floor, look, rng) -> None:  # type: ignore[no-untyped-def]
    """Invalid: a pen mark that covers the well: a cross or scribble through the floor's centre,
    or a ring over the floor crossed out, with or without cells under it. The mark covers at
    least 10 % of the floor, so the well is visibly struck out. No filled dot: a dark or red dot
    is what a button looks like."""
    under = rng.random()
    if under < 0.12:
        _button(patch, u, v, px, floor, look, rng)
    elif under < 0.24:
        _mat(patch, u, v, px, floor, look, rng)
    mask = np.zeros(patch.shape[:2], np.float32)
    r_px = 1.0 / px  # the floor radius in pixels
    centre = _centre_px(u, v, px)
    thick = max(1, int(r_px * rng.uniform(0.1, 0.22)))
    shape = rng.random()
    ink = INKS[int(rng.integers(len(INKS)))]
    if shape < 0.3:  # a ring over the floor, crossed out
        rad = int(r_px * rng.uniform(0.45, 0.85) * 16)
        cv2.ellipse(
            mask,
            (int(centre[0] * 16), int(centre[1] * 16)),
            (rad, int(rad * rng.uniform(0.8, 1.1))),
            float(rng.uniform(0, 180)),
            0,
            float(rng.uniform(280, 360)),
            1.0,
            thick,
            cv2.LINE_AA,
            shift=4,
        )
        _line_through(mask, centre, r_px, rng, thick)
    else:  # a cross (two lines) or a scribble
        for _ in range(2 if shape < 0.65 else int(rng.integers(3, 7))):
            _line_through(mask, centre, r_px, rng, thick)
    for _ in range(6):
        if _floor_cover(mask, floor) >= 0.1:
            break
        _line_through(mask, centre, r_px, rng, thick + 1)
    _absorb(patch, mask * float(rng.uniform(0.6, 0.95)), ink)


_DRAWERS = {
    "teardrop": _teardrop,
    "button": _button,
    "mat": _mat,
    "weakmat": _tilted_mat,
    "shield": _shield,
    "film": _film,
    "clear": _clear,
    "ring": _ring,
    "empty": _empty,
    "dry": _dry,
    "bubble": _bubble,
    "debris": _debris,
    "pen": _pen,
}
