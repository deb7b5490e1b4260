"""The plate-quality gate: should a read be trusted, or held for an operator's review?

A read is `needs_review` with one or more reasons, in this order:

- `not_a_plate`: the frame is blank (almost no contrast), or at least `not_a_plate_fraction`
  of the crops hold no well (the classifier's `nowell`) and the grid moved by half a well
  finds none either.
- `grid_misfit`: more than `max_nowell` crops hold no well (the grid sits between or beside
  the wells; when most crops hold no well but the grid moved by half a well finds them, the
  grid is off by about half a well); on the detector path with a calibration, more than
  `max_off_centre_fraction` of the wells have their box centre over a quarter pitch from the
  cell centre, or more than `max_nowell` cells have no box at all.
- `too_many_unread`: more than `max_unread_fraction` of the wells are `unread`.
- `precision_disagreement`: the fp32 and int8 classifiers both ran (`cross_check_precision`)
  and agree on fewer than `min_precision_agreement` of the wells.
- `detector_disagreement`: the detector also ran (`cross_check_detector`) and, on the wells
  both called, agrees with the classifier on fewer than `min_detector_agreement` of them (its
  boxes also feed the off-centre check of `grid_misfit`).

A read that needs review keeps its wells and rows for display; the reader marks every row
`review` (never counted, `core.titre.hold_for_review`), and the appliance writes no CSV for it.
The decision is a pure function of what the reader saw, so it has its own tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.wells import WellCall
from edge.detect.settings import ReviewSettings

REVIEW_REASONS = (
    "not_a_plate",
    "grid_misfit",
    "too_many_unread",
    "precision_disagreement",
    "detector_disagreement",
)


def frame_is_blank(image_bgr: np.ndarray, threshold: float) -> bool:
    """Grey levels vary less than `threshold` (std): a lens cap, a blank or grey frame."""
    small = image_bgr[:: max(1, image_bgr.shape[0] // 200), :: max(1, image_bgr.shape[1] // 200)]
    # The mean of the three channels and its deviation, in OpenCV (a third of numpy's time).
    grey = cv2.transform(small.astype(np.float32), np.full((1, 3), 1 / 3, np.float32))
    return float(cv2.meanStdDev(grey)[1][0, 0]) < threshold


def off_centre(detections: Sequence[Detection], grid: CalibrationGrid) -> tuple[int, int]:
    """(wells whose deciding box is over a quarter pitch from the cell centre, cells with no
    box at all), for the detector path. One box per cell: the one nearest the centre."""
    nearest: dict[tuple[int, int], float] = {}
    for det in detections:
        cx, cy = det.center
        cell = grid.cell_at(cx, cy)
        if cell is None:
            continue
        x1, y1, x2, y2 = grid.cell_box(*cell)
        dx = abs(cx - (x1 + x2) / 2) / max(x2 - x1, 1e-6)
        dy = abs(cy - (y1 + y2) / 2) / max(y2 - y1, 1e-6)
        offset = max(dx, dy)
        nearest[cell] = min(offset, nearest.get(cell, offset))
    far = sum(1 for v in nearest.values() if v > 0.25)
    return far, grid.plate_format.n_wells - len(nearest)


def review_reasons(
    wells: Mapping[str, WellCall],
    *,
    settings: ReviewSettings,
    blank: bool = False,
    nowell: int | None = None,
    detections: Sequence[Detection] | None = None,
    grid: CalibrationGrid | None = None,
    agreement: float | None = None,
    shifted_nowell: int | None = None,
    detector_agreement: float | None = None,
) -> list[str]:
    """The reasons to hold this read for review (empty: the read is clean).

    `nowell`: crops the classifier found no well in (classifier path); `detections` + `grid`:
    the detector's boxes in the grid's pixels (detector path, with a calibration);
    `shifted_nowell`: the fewest `nowell` crops through the grid moved by half a well (only
    looked at when most crops hold no well: wells there mean the grid, not the frame, is off).
    """
    n = max(len(wells), 1)
    reasons: list[str] = []
    most = settings.not_a_plate_fraction * n
    if blank:
        reasons.append("not_a_plate")
    elif nowell is not None and nowell >= most:
        found_elsewhere = shifted_nowell is not None and shifted_nowell < most
        reasons.append("grid_misfit" if found_elsewhere else "not_a_plate")
    elif nowell is not None and nowell > settings.max_nowell:
        reasons.append("grid_misfit")
    elif detections is not None and grid is not None:
        # The detector's boxes: from the detector path, or its cross-check of the classifier.
        far, empty = off_centre(detections, grid)
        if far > settings.max_off_centre_fraction * n or empty > settings.max_nowell:
            reasons.append("grid_misfit")
    unread = sum(1 for w in wells.values() if w.state == "unread")
    if unread > settings.max_unread_fraction * n:
        reasons.append("too_many_unread")
    if agreement is not None and agreement < settings.min_precision_agreement:
        reasons.append("precision_disagreement")
    if detector_agreement is not None and detector_agreement < settings.min_detector_agreement:
        reasons.append("detector_disagreement")
    return reasons


def call_agreement(ours: Mapping[str, WellCall], theirs: Mapping[str, WellCall]) -> float | None:
    """Share of the wells both called (neither `unread`) that got the same state; None when
    they share no called well."""
    both = [
        (a.state, theirs[w].state)
        for w, a in ours.items()
        if w in theirs and a.state != "unread" and theirs[w].state != "unread"
    ]
    if not both:
        return None
    return sum(a == b for a, b in both) / len(both)
