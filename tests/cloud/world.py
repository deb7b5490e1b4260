"""A small populated world for API tests: two sites, one user per role, one device per site."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.crud import devices, sites, users
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.models import Role
from cloud.settings import CloudSettings

PASSWORD = "correct-horse-battery-staple"


@dataclass
class Actor:
    email: str
    user_id: uuid.UUID
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    settings: CloudSettings
    client: TestClient
    site_a: uuid.UUID
    site_b: uuid.UUID
    slug_a: str
    slug_b: str
    actors: dict[str, Actor]
    device_a: uuid.UUID
    device_b: uuid.UUID
    device_token_a: str
    device_token_b: str
    extra: dict[str, Any] = field(default_factory=dict)

    def sessions(self):  # type: ignore[no-untyped-def]
        return self.client.app.state.microplate.sessions  # type: ignore[attr-defined]

    def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        resp = self.client.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data


def build_world(settings: CloudSettings, client: TestClient) -> World:
    engine = make_engine(settings)
    tag = secrets.token_hex(3)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            a = sites.create_site(session, slug=f"site-a-{tag}", name="Site A")
            b = sites.create_site(session, slug=f"site-b-{tag}", name="Site B")
            made: dict[str, Actor] = {}
            for role, site_ids in (
                ("admin", []),
                ("manager", [a.id]),
                ("viewer", [a.id]),
                ("manager_b", [b.id]),
            ):
                email = f"{role}-{tag}@example.test"
                user = users.create_user(
                    session,
                    email=email,
                    password=PASSWORD,
                    role=Role(role.split("_")[0]),
                    site_ids=site_ids,
                )
                made[role] = Actor(email=email, user_id=user.id)
            dev_a = devices.provision_device(session, site=a, slug="reader-1")
            dev_b = devices.provision_device(session, site=b, slug="reader-1")
            world = World(
                settings=settings,
                client=client,
                site_a=a.id,
                site_b=b.id,
                slug_a=a.slug,
                slug_b=b.slug,
                actors=made,
                device_a=dev_a.device.id,
                device_b=dev_b.device.id,
                device_token_a=dev_a.api_token,
                device_token_b=dev_b.api_token,
            )
    finally:
        engine.dispose()
    for actor in world.actors.values():
        actor.token = world.login(actor.email)["access_token"]
    return world


def open_client(settings: CloudSettings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def tmp_dir(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    return base
