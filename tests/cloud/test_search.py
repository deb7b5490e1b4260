"""Sample search: a prefix of the sample number, the submission number or a run's
description, in any letter case, within the caller's sites; and the indexes that make it
an index lookup (migration s005)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select, text

from cloud.crud.search import like_prefix, matching_samples
from cloud.db import make_engine
from cloud.models import Device, Sample
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import run_message
from tests.cloud.world import World, build_world, open_client


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(migrated_db, tmp_path_factory.mktemp("search"), s3_server)
    with open_client(settings) as client:
        world = build_world(settings, client)
        from cloud.crud import results

        tag = world.slug_a[-6:].upper()
        runs = [
            ("a", f"HK-{tag}-0001", f"SUB-{tag}-A", "Broilers, house 3"),
            ("a", f"HK-{tag}-0002", f"SUB-{tag}-A", "broilers house 4"),
            ("a", f"HK-{tag}-0103", f"SUB-{tag}-B", "Layers 50%_off"),
            ("a", f"hk-{tag}-0104", None, ""),
            ("b", f"HK-{tag}-0005", f"SUB-{tag}-A", "Broilers at the other site"),
        ]
        with world.sessions()() as session:
            for which, number, submission, description in runs:
                device = session.get(Device, world.device_a if which == "a" else world.device_b)
                message = run_message(
                    site=world.slug_a if which == "a" else world.slug_b,
                    device="reader-1",
                    sample_number=number,
                    submission_number=submission,
                ).model_copy(update={"description": description})
                results.upsert_run(session, message, device=device)
            session.commit()
        world.extra["tag"] = tag
        yield world


def find(world: World, q: str, role: str = "manager") -> list[str]:
    resp: httpx.Response = world.client.get(
        "/api/v1/samples", params={"q": q, "limit": 200}, headers=world.actors[role].headers
    )
    assert resp.status_code == 200, resp.text
    return sorted(s["sample_number"] for s in resp.json()["items"])


def test_prefix_of_the_sample_number_in_any_case(world: World) -> None:
    tag = world.extra["tag"]
    assert find(world, f"hk-{tag.lower()}-00") == [f"HK-{tag}-0001", f"HK-{tag}-0002"]
    assert find(world, f"HK-{tag}-01") == [f"HK-{tag}-0103", f"hk-{tag}-0104"]
    assert find(world, f"HK-{tag}-0001") == [f"HK-{tag}-0001"]  # a whole number still works
    assert find(world, f"K-{tag}") == []  # a prefix, not a substring


def test_prefix_of_the_submission_and_of_a_description(world: World) -> None:
    tag = world.extra["tag"]
    assert find(world, f"sub-{tag.lower()}-a") == [f"HK-{tag}-0001", f"HK-{tag}-0002"]
    assert find(world, "BROILERS") == [f"HK-{tag}-0001", f"HK-{tag}-0002"]
    # The other site's broilers are visible to its manager only, and to the admin.
    assert find(world, "broilers", "manager_b") == [f"HK-{tag}-0005"]
    assert f"HK-{tag}-0005" in find(world, "broilers", "admin")


def test_wildcards_in_the_query_are_taken_literally(world: World) -> None:
    tag = world.extra["tag"]
    assert like_prefix("50%_o\\") == "50\\%\\_o\\\\%"
    assert find(world, "layers 50%_") == [f"HK-{tag}-0103"]
    assert find(world, "layers 5_%") == []
    assert find(world, "%") == [] and find(world, "_") == []
    # The prefix is inlined into the SQL (see cloud.crud.search): quotes stay text.
    assert find(world, "x' OR '1'='1") == [] and find(world, "\\'; --") == []


def test_each_lookup_can_use_its_index(world: World) -> None:
    # With sequential scans priced out, a plan without the index would mean the query's
    # expression no longer matches the index's (e.g. a changed JSON key or a missing lower()).
    engine = make_engine(world.settings)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))
            query = select(Sample.id).where(matching_samples("Broil"))
            compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
            plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))
    finally:
        engine.dispose()
    for index in (
        "ix_samples_sample_number_prefix",
        "ix_samples_submission_prefix",
        "ix_runs_description_prefix",
    ):
        assert index in plan, plan
