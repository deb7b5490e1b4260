"""The model registry for admins: releases, assignments to a site or device group (canary
first), promotion and the admin's switch confirmation; rollouts for anyone signed in, scoped."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, BackgroundTasks, HTTPException, status

from cloud.api.deps import (
    AdminUser,
    ReleasingRoute,
    ScopeDep,
    SessionDep,
    StateDep,
    not_found,
)
from cloud.crud import audit, ota, sites
from cloud.crud.scope import Scope
from cloud.models import ModelAssignment, ModelRelease
from cloud.ota_notify import publish_quietly
from cloud.schemas_ota import AssignmentCreate, AssignmentPublic, ReleasePublic, RolloutPublic
from core.ota import SignedManifest

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/models", tags=["models"], route_class=ReleasingRoute)


def release_public(release: ModelRelease) -> ReleasePublic:
    manifest = SignedManifest.model_validate(release.signed_manifest).manifest
    return ReleasePublic(
        id=release.id,
        name=release.name,
        version=release.version,
        manifest_sha256=release.manifest_sha256,
        key_id=release.key_id,
        published_at=release.published_at,
        plate_formats=list(manifest.plate_formats),
        modes=list(manifest.modes),
        metrics=dict(manifest.metrics),
        gate_accepted=manifest.gate.accepted if manifest.gate is not None else None,
    )


def _assignment_public(session: SessionDep, a: ModelAssignment) -> AssignmentPublic:
    release = session.get(ModelRelease, a.release_id)
    assert release is not None  # a foreign key
    return AssignmentPublic(
        id=a.id,
        name=release.name,
        version=release.version,
        site_id=a.site_id,
        stage=a.stage,
        revision=a.revision,
        canary_device_id=a.canary_device_id,
        shadow_plates=a.shadow_plates,
        agreement_threshold=a.agreement_threshold,
        switch_confirmed=a.switch_confirmed,
        created_at=a.created_at,
    )


@router.get("")
def list_releases(admin: AdminUser, session: SessionDep) -> list[ReleasePublic]:
    return [release_public(r) for r in ota.list_releases(session)]


@router.get("/rollouts")
def list_rollouts(scope: ScopeDep, session: SessionDep) -> list[RolloutPublic]:
    """Every device's rollout state, newest assignment first (a manager sees their sites)."""
    return [
        RolloutPublic.model_validate(r)
        for r in ota.rollout_rows(session)
        if scope.allows(r.site_id)
    ]


@router.post("/assignments", status_code=201, responses={404: {}, 409: {}})
def create_assignment(
    body: AssignmentCreate,
    admin: AdminUser,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
) -> AssignmentPublic:
    """Assign a published release to a site (or a group of its devices). Only the canary is
    told at first; the others once the canary has switched or an admin promotes."""
    release = ota.get_release(session, name=body.name, version=body.version)
    if release is None:
        raise not_found("Model release")
    site = sites.get_site(session, site_id=body.site_id, scope=Scope.everything())
    if site is None:
        raise not_found("Site")
    try:
        assignment = ota.create_assignment(
            session,
            release=release,
            site=site,
            device_slugs=body.devices,
            canary_slug=body.canary,
            shadow_plates=body.shadow_plates,
            agreement_threshold=body.agreement_threshold,
            created_by=admin.id,
        )
    except ota.OtaError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    audit.record(
        session,
        action="model.assigned",
        actor_user_id=admin.id,
        target_type="model_assignment",
        target_id=assignment.id,
        site_id=site.id,
        detail={"model": f"{release.name} {release.version}", "canary": body.canary},
    )
    session.commit()
    background.add_task(publish_quietly, state.settings, state.sessions)
    return _assignment_public(session, assignment)


@router.get("/assignments")
def list_assignments(admin: AdminUser, session: SessionDep) -> list[AssignmentPublic]:
    from sqlalchemy import select

    found = session.scalars(select(ModelAssignment).order_by(ModelAssignment.created_at.desc()))
    return [_assignment_public(session, a) for a in found]


def _change(
    assignment_id: uuid.UUID,
    action: str,
    admin: AdminUser,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
) -> AssignmentPublic:
    assignment = ota.get_assignment(session, assignment_id)
    if assignment is None:
        raise not_found("Assignment")
    try:
        if action == "promoted":
            ota.promote(session, assignment)
        else:
            ota.confirm_switch(session, assignment)
    except ota.OtaError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    audit.record(
        session,
        action=f"model.{action}",
        actor_user_id=admin.id,
        target_type="model_assignment",
        target_id=assignment.id,
        site_id=assignment.site_id,
    )
    session.commit()
    background.add_task(publish_quietly, state.settings, state.sessions)
    return _assignment_public(session, assignment)


@router.post("/assignments/{assignment_id}/promote", responses={404: {}, 409: {}})
def promote(
    assignment_id: uuid.UUID,
    admin: AdminUser,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
) -> AssignmentPublic:
    """Tell every target now, without waiting for the canary to switch."""
    return _change(assignment_id, "promoted", admin, session, state, background)


@router.post("/assignments/{assignment_id}/confirm", responses={404: {}, 409: {}})
def confirm(
    assignment_id: uuid.UUID,
    admin: AdminUser,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
) -> AssignmentPublic:
    """Confirm the switch: devices switch after shadowing, whatever the agreement."""
    return _change(assignment_id, "switch_confirmed", admin, session, state, background)
