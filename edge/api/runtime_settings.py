"""Settings a supervisor may change while the appliance runs (template, dilution, thresholds)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from edge.api.deps import ApplianceDep, SupervisorUser, require_operator
from edge.api.errors import ApiError
from edge.schemas import RuntimeSettings, RuntimeSettingsPatch

router = APIRouter(
    prefix="/api/settings", tags=["settings"], dependencies=[Depends(require_operator)]
)


@router.get("", summary="The runtime settings in force")
def get_settings(appliance: ApplianceDep) -> RuntimeSettings:
    return appliance.runtime.get()


@router.patch("", summary="Change runtime settings (supervisor); only the fields given change")
def patch_settings(
    patch: RuntimeSettingsPatch, appliance: ApplianceDep, user: SupervisorUser
) -> RuntimeSettings:
    # In a patch, null means "clear"; only an optional setting can be cleared.
    current = appliance.runtime.get()
    cleared = sorted(
        name
        for name in patch.model_fields_set
        if getattr(patch, name) is None and not _optional(type(current), name)
    )
    if cleared:
        raise ApiError(
            422,
            "invalid_input",
            f"{', '.join(cleared)} cannot be empty: leave a setting out to keep its value.",
        )
    return appliance.runtime.update(patch, actor=user.actor)


def _optional(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and not field.is_required() and field.default is None
