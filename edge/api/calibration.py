"""Calibration: the grid of column and row lines that maps detections to wells.

``PUT`` takes the grid as JSON in the old system's file format (``columns``, ``rows``,
``image_width``, ``image_height``, optionally ``bounds`` and ``format_version: 3``), so a
saved ``roi_calibration.json`` can be sent as the body unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Body, Depends, status

from core.calibration import CalibrationGrid
from edge.api.deps import ApplianceDep, SupervisorUser, require_operator
from edge.api.errors import ApiError
from edge.schemas import CalibrationOut

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/calibration", tags=["calibration"], dependencies=[Depends(require_operator)]
)

LEGACY_EXAMPLE = {
    "columns": [
        *(106.0, 264.0, 386.0, 515.0, 641.0, 763.0, 901.0),
        *(1014.0, 1145.0, 1271.0, 1387.0, 1520.0, 1657.0),
    ],
    "rows": [122.0, 255.0, 386.0, 508.0, 626.0, 759.0, 900.0, 1011.0, 1134.0],
    "image_width": 1700,
    "image_height": 1200,
    "format_version": 3,
}


@router.get("", summary="The grid in use")
def get_calibration(appliance: ApplianceDep) -> CalibrationOut:
    current = appliance.calibration.get()
    if current is None:
        raise ApiError(
            404,
            "no_calibration",
            "No calibration grid is set: a supervisor must calibrate before plates are read.",
        )
    return current


@router.put("", summary="Set the grid (supervisor); the old system's file is accepted as is")
def put_calibration(
    appliance: ApplianceDep,
    user: SupervisorUser,
    grid: dict[str, Any] = Body(..., examples=[LEGACY_EXAMPLE]),  # noqa: B008
) -> CalibrationOut:
    # CalibrationError (a ValueError naming the bad value) becomes a 422 in edge.api.errors.
    parsed = CalibrationGrid.from_legacy(grid)
    return appliance.calibration.set(parsed, actor=user.actor)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, summary="Remove the grid (supervisor)")
def delete_calibration(appliance: ApplianceDep, user: SupervisorUser) -> None:
    appliance.calibration.delete(actor=user.actor)


@router.post(
    "/proposal",
    summary="Capture a frame and propose a grid from its detections (supervisor)",
)
def propose_calibration(appliance: ApplianceDep, _: SupervisorUser) -> dict[str, Any]:
    # Returned in the same file format PUT accepts, so the UI can show it, let the supervisor
    # adjust it, and send it back.
    grid = appliance.calibration.propose()
    return grid.to_legacy()
