"""Device registry for people: list, provision (admin), revoke (admin)."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request, status

from cloud.api.deps import (
    AdminUser,
    ReleasingRoute,
    ScopeDep,
    SessionDep,
    SettingsDep,
    StateDep,
    client_ip,
    not_found,
)
from cloud.broadcast import notify
from cloud.config_notify import publish_configs_quietly
from cloud.crud import audit, devices, sites
from cloud.crud.scope import Scope
from cloud.schemas import DeviceCreate, DevicePublic, EnrollmentBundle

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/devices", tags=["devices"], route_class=ReleasingRoute)


@router.get("")
def list_devices(
    scope: ScopeDep,
    session: SessionDep,
    site_id: Annotated[uuid.UUID | None, Query()] = None,
) -> list[DevicePublic]:
    found = devices.list_devices(session, scope=scope, site_id=site_id)
    return [DevicePublic.model_validate(d) for d in found]


@router.get("/{device_id}", responses={404: {}})
def get_device(device_id: uuid.UUID, scope: ScopeDep, session: SessionDep) -> DevicePublic:
    device = devices.get_device(session, device_id=device_id, scope=scope)
    if device is None:
        raise not_found("Device")
    return DevicePublic.model_validate(device)


@router.post("", status_code=201, responses={404: {}, 409: {}})
def provision_device(
    body: DeviceCreate,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    background: BackgroundTasks,
) -> EnrollmentBundle:
    """Create a device and return its enrollment bundle. The secrets are shown only here."""
    site = sites.get_site(session, site_id=body.site_id, scope=Scope.everything())
    if site is None:
        raise not_found("Site")
    try:
        enrollment = devices.provision_device(session, site=site, slug=body.slug, name=body.name)
    except devices.DeviceError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    device = enrollment.device
    audit.record(
        session,
        action="device.provisioned",
        actor_user_id=admin.id,
        target_type="device",
        target_id=device.id,
        site_id=site.id,
        ip=client_ip(request),
    )
    notify(
        session,
        {
            "type": "device",
            "site_id": str(site.id),
            "device_id": str(device.id),
            "status": "active",
        },
    )
    devices.sync_broker_files(session, settings)
    session.commit()
    background.add_task(publish_configs_quietly, state.settings, state.sessions)
    return devices.enrollment_bundle(enrollment, site=site, settings=settings)


@router.post("/{device_id}/revoke", responses={404: {}})
def revoke_device(
    device_id: uuid.UUID,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
) -> DevicePublic:
    device = devices.get_device(session, device_id=device_id, scope=Scope.everything())
    if device is None:
        raise not_found("Device")
    if device.status != "revoked":
        devices.revoke_device(session, device=device)
        audit.record(
            session,
            action="device.revoked",
            actor_user_id=admin.id,
            target_type="device",
            target_id=device.id,
            site_id=device.site_id,
            ip=client_ip(request),
        )
        notify(
            session,
            {
                "type": "device",
                "site_id": str(device.site_id),
                "device_id": str(device.id),
                "status": "revoked",
            },
        )
        devices.sync_broker_files(session, settings)
        session.commit()
    return DevicePublic.model_validate(device)
