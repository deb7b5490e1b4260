"""User administration (admins only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from cloud.api.auth import user_public
from cloud.api.deps import AdminUser, SessionDep, client_ip, not_found
from cloud.crud import audit, tokens, users
from cloud.schemas import UserCreate, UserPublic, UserUpdate

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("")
def list_users(
    admin: AdminUser,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[UserPublic]:
    return [user_public(u) for u in users.list_users(session, offset=offset, limit=limit)]


@router.post("", status_code=201, responses={409: {}})
def create_user(
    body: UserCreate, request: Request, admin: AdminUser, session: SessionDep
) -> UserPublic:
    try:
        user = users.create_user(
            session,
            email=body.email,
            password=body.password,
            role=body.role,
            full_name=body.full_name,
            site_ids=body.site_ids,
        )
    except users.UserError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    audit.record(
        session,
        action="user.created",
        actor_user_id=admin.id,
        target_type="user",
        target_id=user.id,
        ip=client_ip(request),
        detail={"role": body.role.value, "site_ids": [str(s) for s in body.site_ids]},
    )
    session.commit()
    return user_public(user)


@router.get("/{user_id}", responses={404: {}})
def get_user(user_id: uuid.UUID, admin: AdminUser, session: SessionDep) -> UserPublic:
    user = users.get_user(session, user_id=user_id)
    if user is None:
        raise not_found("User")
    return user_public(user)


@router.patch("/{user_id}", responses={404: {}, 409: {}})
def update_user(
    user_id: uuid.UUID, body: UserUpdate, request: Request, admin: AdminUser, session: SessionDep
) -> UserPublic:
    user = users.get_user(session, user_id=user_id)
    if user is None:
        raise not_found("User")
    try:
        changes = users.update_user(
            session,
            user=user,
            role=body.role,
            is_active=body.is_active,
            full_name=body.full_name,
            site_ids=body.site_ids,
        )
    except users.UserError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if body.is_active is False:
        tokens.revoke_all_for_user(session, user_id=user.id)
    if changes:
        audit.record(
            session,
            action="user.permissions_changed",
            actor_user_id=admin.id,
            target_type="user",
            target_id=user.id,
            ip=client_ip(request),
            detail=changes,
        )
    session.commit()
    return user_public(user)
