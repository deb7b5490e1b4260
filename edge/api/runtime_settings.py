"""Settings a supervisor may change while the appliance runs (template, dilution, thresholds)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from edge.api.deps import ApplianceDep, SupervisorUser, require_operator
from edge.schemas import RuntimeSettings, RuntimeSettingsPatch

router = APIRouter(
    prefix="/api/settings", tags=["settings"], dependencies=[Depends(require_operator)]
)


@router.get("", summary="The runtime settings in force")
def get_settings(appliance: ApplianceDep) -> RuntimeSettings:
    return appliance.get_runtime_settings()


@router.patch("", summary="Change runtime settings (supervisor); only the fields given change")
def patch_settings(
    patch: RuntimeSettingsPatch, appliance: ApplianceDep, user: SupervisorUser
) -> RuntimeSettings:
    return appliance.update_runtime_settings(patch, actor=user.actor)
