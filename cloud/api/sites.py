"""Site registry: everyone sees the sites they may see; admins create and edit."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, status

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
from cloud.config_notify import publish_configs_quietly
from cloud.crud import audit, devices, sites
from cloud.crud.scope import Scope
from cloud.schemas import SiteCreate, SitePublic, SiteUpdate

router = APIRouter(prefix="/api/v1/sites", tags=["sites"], route_class=ReleasingRoute)


@router.get("")
def list_sites(scope: ScopeDep, session: SessionDep) -> list[SitePublic]:
    return [SitePublic.model_validate(s) for s in sites.list_sites(session, scope=scope)]


@router.post("", status_code=201, responses={409: {}})
def create_site(
    body: SiteCreate, request: Request, admin: AdminUser, session: SessionDep
) -> SitePublic:
    try:
        site = sites.create_site(
            session,
            slug=body.slug,
            name=body.name,
            csv_template=body.csv_template,
            protective_titre=body.protective_titre,
        )
    except sites.SiteError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    audit.record(
        session,
        action="site.created",
        actor_user_id=admin.id,
        target_type="site",
        target_id=site.id,
        site_id=site.id,
        ip=client_ip(request),
    )
    session.commit()
    return SitePublic.model_validate(site)


@router.get("/{site_id}", responses={404: {}})
def get_site(site_id: uuid.UUID, scope: ScopeDep, session: SessionDep) -> SitePublic:
    site = sites.get_site(session, site_id=site_id, scope=scope)
    if site is None:
        raise not_found("Site")
    return SitePublic.model_validate(site)


@router.patch("/{site_id}", responses={404: {}})
def update_site(
    site_id: uuid.UUID,
    body: SiteUpdate,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    background: BackgroundTasks,
) -> SitePublic:
    site = sites.get_site(session, site_id=site_id, scope=Scope.everything())
    if site is None:
        raise not_found("Site")
    sites.update_site(
        session,
        site=site,
        name=body.name,
        csv_template=body.csv_template,
        protective_titre=body.protective_titre,
        enabled=body.enabled,
        allow_training=body.allow_training,
    )
    if body.enabled is not None:
        # The broker files follow at once: a disabled site's devices lose their accounts.
        devices.sync_broker_files(session, settings)
    audit.record(
        session,
        action="site.updated",
        actor_user_id=admin.id,
        target_type="site",
        target_id=site.id,
        site_id=site.id,
        ip=client_ip(request),
        detail=body.model_dump(exclude_none=True),
    )
    session.commit()
    background.add_task(publish_configs_quietly, state.settings, state.sessions)
    return SitePublic.model_validate(site)
