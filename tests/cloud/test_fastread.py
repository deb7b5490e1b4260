"""The fast read routes (sample list, sample detail, run detail) against the ORM path.

`cloud.crud.fastread` builds their JSON without pydantic; here every body is validated
against its documented model and compared field by field with what the ORM queries and the
pydantic models give for the same data, and the per-request access rules are re-checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from cloud.crud import queries, results
from cloud.crud.scope import Scope
from cloud.db import READ_APPLICATION_NAME
from cloud.models import Device
from cloud.schemas_results import (
    RowPublic,
    RunDetail,
    RunSummary,
    SampleDetail,
    SampleListItem,
    SamplePage,
    WellPublic,
)
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import run_message
from tests.cloud.world import PASSWORD, World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

BASE = datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("fastread"), s3_server, login_rate_per_minute=500
    )
    with open_client(settings) as client:
        world = build_world(settings, client)
        runs: list[uuid.UUID] = []
        with world.sessions()() as session:
            for which, slug, device_id in (
                ("a", world.slug_a, world.device_a),
                ("b", world.slug_b, world.device_b),
            ):
                device = session.get(Device, device_id)
                assert device is not None
                for i in range(4):
                    for plate in range(2):
                        # Whole seconds and fractions both: datetime text must match pydantic.
                        when = BASE + timedelta(hours=i, minutes=plate, microseconds=plate * 120)
                        msg = run_message(
                            site=slug,
                            device="reader-1",
                            sample_number=f"FR-{which}-{i}",
                            submission_number=f"FSUB-{which}",
                            captured_at=when,
                            endpoints=(5, 6, None, 7, 4, 0, 12, 6 - plate),
                        )
                        results.upsert_run(session, msg, device=device)
                        runs.append(msg.run_id)
            session.commit()
        world.extra["runs"] = runs
        yield world


def _get(world: World, who: str, path: str, **params: Any) -> Any:
    return world.client.get(path, params=params, headers=world.actors[who].headers)


def _scope(world: World, who: str) -> Scope:
    return {
        "admin": Scope.everything(),
        "viewer": Scope(all_sites=False, site_ids=frozenset({world.site_a})),
        "manager_b": Scope(all_sites=False, site_ids=frozenset({world.site_b})),
    }[who]


def _orm_page(world: World, who: str, **kw: Any) -> dict[str, Any]:
    """What the pydantic route gave before: the oracle for the list."""
    cursor = kw.pop("cursor", None)
    limit = kw.pop("limit", 50)
    with world.sessions()() as session:
        page = queries.list_samples(
            session,
            scope=_scope(world, who),
            flt=queries.SampleFilter(**kw),
            limit=limit,
            cursor=cursor,
        )
        model = SamplePage(
            items=[SampleListItem.model_validate(s) for s in page.items],
            next_cursor=page.next_cursor,
        )
    return model.model_dump(mode="json")


@pytest.mark.parametrize("who", ["admin", "viewer", "manager_b"])
def test_sample_list_pages_match_the_orm_path(world: World, who: str) -> None:
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        resp = _get(world, who, "/api/v1/samples", **params)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        body = resp.json()
        SamplePage.model_validate(body)
        assert body == _orm_page(world, who, limit=3, cursor=cursor)
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages >= 2


def test_sample_list_filters_match_the_orm_path(world: World) -> None:
    for params, flt in (
        ({"q": "FR-a-2"}, {"q": "FR-a-2"}),
        ({"q": "FSUB-b"}, {"q": "FSUB-b"}),
        ({"site_id": str(world.site_b)}, {"site_id": world.site_b}),
        ({"device_id": str(world.device_a)}, {"device_id": world.device_a}),
        (
            {"read_from": "2026-03-01T09:00:00Z", "read_to": "2026-03-01T11:00:00Z"},
            {
                "read_from": BASE + timedelta(minutes=30),
                "read_to": BASE + timedelta(hours=2, minutes=30),
            },
        ),
        ({"flag": "no_inhibition"}, {"flags": ("no_inhibition",)}),
    ):
        body = _get(world, "admin", "/api/v1/samples", **params).json()
        assert body == _orm_page(world, "admin", **flt), params
        assert body["items"], params
    # Another site's samples are simply not there for a viewer.
    assert _get(world, "viewer", "/api/v1/samples", q="FSUB-b").json()["items"] == []


def test_bad_cursor_is_a_clear_400(world: World) -> None:
    resp = _get(world, "viewer", "/api/v1/samples", cursor="not-a-cursor!")
    assert resp.status_code == 400
    assert "cursor" in resp.json()["detail"]


def test_sample_detail_matches_the_orm_path(world: World) -> None:
    page = _get(world, "admin", "/api/v1/samples", limit=200).json()["items"]
    assert len(page) >= 8
    for item in page:
        resp = _get(world, "admin", f"/api/v1/samples/{item['id']}")
        assert resp.status_code == 200
        body = resp.json()
        SampleDetail.model_validate(body)
        with world.sessions()() as session:
            sample = queries.get_sample(
                session, sample_id=uuid.UUID(item["id"]), scope=Scope.everything()
            )
            assert sample is not None
            summary = sample.summary or {}
            expected = SampleDetail(
                **SampleListItem.model_validate(sample).model_dump(),
                n_cols=sample.n_cols,
                distribution=sample.distribution,
                statistics=summary.get("statistics", {}),
                current_run_ids=[uuid.UUID(r) for r in summary.get("run_ids", [])],
            ).model_dump(mode="json")
        assert body == expected
        assert body["statistics"]["n"] > 0 and len(body["current_run_ids"]) == 2


def test_run_detail_matches_the_orm_path(world: World) -> None:
    for run_id in world.extra["runs"]:
        resp = _get(world, "admin", f"/api/v1/runs/{run_id}")
        assert resp.status_code == 200
        body = resp.json()
        RunDetail.model_validate(body)
        with world.sessions()() as session:
            run = queries.get_run(session, run_id=run_id, scope=Scope.everything())
            assert run is not None
            wells, rows = queries.run_details(session, run=run)
            expected = RunDetail(
                **RunSummary.model_validate(run).model_dump(),
                extra=run.extra,
                images=sorted(run.image_keys),
                wells=[WellPublic.model_validate(w) for w in wells],
                rows=[RowPublic.model_validate(r) for r in rows],
            ).model_dump(mode="json")
        assert body == expected
        assert len(body["wells"]) == 96 and [w["well_id"] for w in body["wells"][:2]] == [
            "A1",
            "A2",
        ]


def test_other_sites_and_unknown_ids_are_404(world: World) -> None:
    run_a, run_b = world.extra["runs"][0], world.extra["runs"][-1]
    assert _get(world, "viewer", f"/api/v1/runs/{run_a}").status_code == 200
    assert _get(world, "viewer", f"/api/v1/runs/{run_b}").status_code == 404
    assert _get(world, "manager_b", f"/api/v1/runs/{run_a}").status_code == 404
    assert _get(world, "viewer", f"/api/v1/runs/{uuid.uuid4()}").status_code == 404
    sample_b = _get(world, "admin", "/api/v1/samples", q="FR-b-0").json()["items"][0]["id"]
    assert _get(world, "viewer", f"/api/v1/samples/{sample_b}").status_code == 404
    assert _get(world, "manager_b", f"/api/v1/samples/{sample_b}").status_code == 200
    assert _get(world, "admin", f"/api/v1/samples/{uuid.uuid4()}").status_code == 404


def test_fast_routes_refuse_bad_tokens(world: World) -> None:
    run_id = world.extra["runs"][0]
    for path in ("/api/v1/samples", f"/api/v1/runs/{run_id}"):
        assert world.client.get(path).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert world.client.get(path, headers=bad).status_code == 401
        device = {"Authorization": f"Bearer {world.device_token_a}"}
        assert world.client.get(path, headers=device).status_code == 401


def test_access_changes_apply_on_the_next_request(world: World) -> None:
    """No caching of the user on the hot path: site, password and deactivation changes bite
    at once."""
    admin = world.actors["admin"].headers
    created = world.client.post(
        "/api/v1/users",
        json={
            "email": f"fast-{uuid.uuid4().hex[:8]}@example.com",
            "password": PASSWORD,
            "role": "viewer",
            "site_ids": [str(world.site_a)],
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    user_id, email = created.json()["id"], created.json()["email"]
    token = world.login(email)["access_token"]
    me = {"Authorization": f"Bearer {token}"}
    run_a, run_b = world.extra["runs"][0], world.extra["runs"][-1]

    def status(run_id: uuid.UUID) -> int:
        return int(world.client.get(f"/api/v1/runs/{run_id}", headers=me).status_code)

    assert (status(run_a), status(run_b)) == (200, 404)
    moved = world.client.patch(
        f"/api/v1/users/{user_id}", json={"site_ids": [str(world.site_b)]}, headers=admin
    )
    assert moved.status_code == 200
    assert (status(run_a), status(run_b)) == (404, 200)
    off = world.client.patch(f"/api/v1/users/{user_id}", json={"is_active": False}, headers=admin)
    assert off.status_code == 200
    assert status(run_b) == 401
    assert world.client.get("/api/v1/samples", headers=me).status_code == 401


def test_dead_pooled_connections_are_replaced_without_an_error(world: World) -> None:
    """The read pool has no pre-ping: a killed connection must cost a retry, not a 503."""
    run_id = world.extra["runs"][0]
    for _ in range(3):  # fill the pool with a few idle connections
        assert _get(world, "viewer", f"/api/v1/runs/{run_id}").status_code == 200
    conninfo = world.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (READ_APPLICATION_NAME,),
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    for path in (f"/api/v1/runs/{run_id}", "/api/v1/samples"):
        resp = _get(world, "viewer", path)
        assert resp.status_code == 200, resp.text
