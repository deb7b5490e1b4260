"""One square crop per calibrated well: the input of the well classifier.

This is the contract shared by training (``models/``), evaluation and the appliance: a crop is
the well's calibrated cell, centred on the cell centre, made square with side
``max(cell width, cell height) × scale`` and resized to ``size`` × ``size``. Pixels outside the
frame repeat the frame's edge. The tensor is float32 ``[N, 3, size, size]``, RGB, values in
``[0, 1]``, wells in row-major order (A1, A2, …, A12, B1, …).

Training renders wells, cuts them with :func:`crop_wells` through the same grid the renderer
drew, and so sees exactly what the appliance will feed the network.

A model whose manifest sets ``input.mirror_average`` is read on each crop and on its mirror image
(left-right, the mirror the training augmentation uses), and the two probability rows are
averaged: :func:`with_mirrors` builds that batch, :func:`average_mirrors` folds its output back.
The appliance and the evaluation scripts all read through :func:`read_crops`, which applies them.

A model whose manifest sets ``output.confidence_given_well`` reads a well's confidence as the
share of its best state among ``flowing``, ``agglutinated`` and ``invalid`` (the ``nowell`` share
set aside, :func:`given_a_well`): the calibrated grid and the plate-quality gate answer whether a
crop holds a well (a crop whose best class is ``nowell`` stays as it is), and the well threshold
answers which state the well is in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from core.calibration import CalibrationGrid

DEFAULT_SIZE = 48
DEFAULT_SCALE = 1.0


def well_centres(grid: CalibrationGrid) -> np.ndarray:
    """Cell centres ``[rows, cols, 2]`` (x, y) in pixels of the grid's frame."""
    xs = np.asarray(grid.columns, dtype=np.float64)
    ys = np.asarray(grid.rows, dtype=np.float64)
    cx = (xs[:-1] + xs[1:]) / 2.0
    cy = (ys[:-1] + ys[1:]) / 2.0
    out = np.empty((len(cy), len(cx), 2), dtype=np.float64)
    out[..., 0] = cx[None, :]
    out[..., 1] = cy[:, None]
    return out


def well_boxes(
    grid: CalibrationGrid, *, scale: float = DEFAULT_SCALE
) -> list[tuple[float, float, float]]:
    """``(cx, cy, side)`` of every well's square crop, row-major."""
    if not (0.25 <= scale <= 4.0):
        raise ValueError(f"crop scale {scale!r} must be between 0.25 and 4")
    xs, ys = grid.columns, grid.rows
    boxes: list[tuple[float, float, float]] = []
    for r in range(len(ys) - 1):
        for c in range(len(xs) - 1):
            w, h = xs[c + 1] - xs[c], ys[r + 1] - ys[r]
            boxes.append(((xs[c] + xs[c + 1]) / 2, (ys[r] + ys[r + 1]) / 2, max(w, h) * scale))
    return boxes


def crop_square(image_bgr: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """A ``size`` × ``size`` BGR uint8 crop of side ``side`` px centred on (cx, cy)."""
    half = side / 2.0
    x0, y0 = round(cx - half), round(cy - half)
    x1, y1 = round(cx + half), round(cy + half)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    height, width = image_bgr.shape[:2]
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x1 - width), max(0, y1 - height)
    patch = image_bgr[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
    if patch.size == 0:
        # The whole crop lies outside the frame: nothing to see, a flat grey square.
        return np.full((size, size, 3), 127, dtype=np.uint8)
    if pad_l or pad_t or pad_r or pad_b:
        patch = cv2.copyMakeBorder(patch, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def crop_wells(
    image_bgr: np.ndarray,
    grid: CalibrationGrid,
    *,
    size: int = DEFAULT_SIZE,
    scale: float = DEFAULT_SCALE,
) -> np.ndarray:
    """Every well of ``grid`` (scaled to the image) as float32 ``[N, 3, size, size]`` RGB 0..1."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 BGR image, got shape {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    grid = grid.scaled(width, height)
    crops = [
        crop_square(image_bgr, cx, cy, side, size) for cx, cy, side in well_boxes(grid, scale=scale)
    ]
    batch = np.stack(crops)[..., ::-1]  # BGR -> RGB
    chw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    scaled: np.ndarray = chw / np.float32(255.0)
    return scaled


def with_mirrors(crops: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` crops followed by their left-right mirror images: ``[2N, C, H, W]``."""
    if crops.ndim != 4:
        raise ValueError(f"expected crops [N, C, H, W], got shape {crops.shape}")
    return np.ascontiguousarray(np.concatenate([crops, crops[..., ::-1]]))


def average_mirrors(probs: np.ndarray) -> np.ndarray:
    """``[2N, K]`` outputs of :func:`with_mirrors` crops -> ``[N, K]``: each crop's row averaged
    with its mirror image's."""
    if probs.ndim != 2 or probs.shape[0] % 2:
        raise ValueError(f"expected [2N, K] outputs of mirrored crops, got shape {probs.shape}")
    n = probs.shape[0] // 2
    averaged: np.ndarray = (probs[:n] + probs[n:]) / 2
    return averaged


def given_a_well(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """``[N, K]`` probabilities -> the same with each crop's ``nowell`` share set aside and the
    other classes renormalised, for every crop whose best class is not ``nowell`` (those crops
    hold a well; a crop whose best class is ``nowell`` is returned as it is). The best class of
    every crop is unchanged; only the confidence of a well's state rises. A model without a
    ``nowell`` class is returned as it is."""
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"expected [N, {len(classes)}] probabilities, got shape {probs.shape}")
    if "nowell" not in classes:
        return probs
    k = list(classes).index("nowell")
    out: np.ndarray = np.array(probs, dtype=np.float32, copy=True)
    well = out.argmax(axis=1) != k
    out[well, k] = 0.0
    sums = out[well].sum(axis=1, keepdims=True)
    out[well] = out[well] / np.maximum(sums, np.float32(1e-12))
    return out


def read_crops(
    run: Callable[[np.ndarray], np.ndarray],
    crops: np.ndarray,
    *,
    mirror_average: bool = False,
    given_well_classes: Sequence[str] | None = None,
) -> np.ndarray:
    """``run`` (a network: crops -> ``[N, K]`` probabilities) over ``crops`` the way a manifest
    asks: with ``mirror_average`` each crop with its mirror image, averaged; with
    ``given_well_classes`` (the mode's classes, when ``output.confidence_given_well``) each
    well's ``nowell`` share set aside (:func:`given_a_well`). The one reading path of the
    appliance's classifier, the evaluation reader, the export's agreement and the fine-tune
    gate."""
    if mirror_average:
        probs = average_mirrors(np.asarray(run(with_mirrors(crops))))
    else:
        probs = np.asarray(run(crops))
    if given_well_classes is not None:
        probs = given_a_well(probs, given_well_classes)
    return probs
