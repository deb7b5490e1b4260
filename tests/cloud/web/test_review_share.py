"""The held-for-review share per device and per model version (`/ui/charts/review-share.json`):
figures against the runs made here, the site scope of the signed-in user, bad filters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from cloud.crud import results
from cloud.models import Device, Run, Site
from cloud.web.chart_data import week_start
from cloud.web.data import week_label
from core.wire import ModelInfo
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import MODEL, deleted_event, run_message
from tests.cloud.world import World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

NEW_MODEL = ModelInfo(name="hi-wells", version="2.1", sha256="1" * 64)
# Two Mondays 09:00 UTC a week apart, well inside the default 182-day window.
_TODAY = datetime.now(timezone.utc).replace(hour=9, minute=0, second=0, microsecond=0)
WEEK_1 = _TODAY - timedelta(days=_TODAY.weekday() + 21)
WEEK_2 = WEEK_1 + timedelta(weeks=1)
# (site, week, model, held, fate): each one run; fate "deleted": deleted later (counts nowhere),
# "supersedes": a re-read that supersedes the run before it (which still counts, as held).
READS = [
    *[("a", WEEK_1, MODEL, False, "")] * 3,
    ("a", WEEK_1, MODEL, True, ""),
    *[("a", WEEK_1, NEW_MODEL, True, "")] * 2,
    ("a", WEEK_1, NEW_MODEL, False, ""),
    ("a", WEEK_1, NEW_MODEL, True, "deleted"),
    *[("a", WEEK_2, NEW_MODEL, False, "")] * 3,
    ("a", WEEK_2, NEW_MODEL, True, ""),
    ("a", WEEK_2, NEW_MODEL, False, "supersedes"),
    *[("b", WEEK_1, MODEL, True, "")] * 2,  # site B: only admins see it
    ("b", WEEK_2, MODEL, False, ""),
]


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("review-share"), s3_server, login_rate_per_minute=500
    )
    with open_client(settings) as client:
        w = build_world(settings, client)
        with w.sessions()() as session:
            names = {
                key: session.get(Site, site_id).name  # type: ignore[union-attr]
                for key, site_id in (("a", w.site_a), ("b", w.site_b))
            }
            before = None
            for i, (site, when, model, held, fate) in enumerate(READS):
                device = session.get(Device, w.device_a if site == "a" else w.device_b)
                assert device is not None
                message = run_message(
                    site=w.slug_a if site == "a" else w.slug_b,
                    device="reader-1",
                    sample_number=f"S-{i}",
                    captured_at=when + timedelta(minutes=i),
                    review_reasons=("grid_misfit",) if held else (),
                    supersedes=before.run_id if before and fate == "supersedes" else None,
                ).model_copy(update={"model": model})
                results.upsert_run(session, message, device=device)
                if fate == "deleted":
                    results.apply_event(session, deleted_event(message.run_id, 1), device=device)
                if fate == "supersedes":
                    assert before is not None
                    older = session.get(Run, before.run_id)
                    assert older is not None and older.status == "superseded"
                before = message
            session.commit()
        w.extra["site_names"] = names
        yield w


def _get(world: World, role: str, **params: str) -> dict[str, object]:
    token = world.actors[role].token
    resp = world.client.get(
        "/ui/charts/review-share.json",
        params=params,
        headers={"Cookie": f"mp_access={token}"},
        follow_redirects=False,
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


def _expected(sites: set[str], label) -> dict[str, dict[str, tuple[int, int]]]:  # type: ignore[no-untyped-def]
    """Series name -> week -> (held, reads), counted from READS in Python."""
    held: Counter[tuple[str, str]] = Counter()
    reads: Counter[tuple[str, str]] = Counter()
    for site, when, model, is_held, fate in READS:
        if site not in sites or fate == "deleted":
            continue
        key = (label(site, model), week_label(when))
        reads[key] += 1
        held[key] += int(is_held)
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for (name, week), n in reads.items():
        out.setdefault(name, {})[week] = (held[(name, week)], n)
    return out


def _actual(body: dict[str, object]) -> dict[str, dict[str, tuple[int, int]]]:
    labels = body["labels"]
    assert isinstance(labels, list) and isinstance(body["series"], list)
    assert body["x"] == [week_start(w) for w in labels]
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for s in body["series"]:
        assert len(s["values"]) == len(s["held"]) == len(s["reads"]) == len(labels)
        for week, value, held, n in zip(labels, s["values"], s["held"], s["reads"], strict=True):
            if n is None:
                assert value is None and held is None
                continue
            assert value == pytest.approx(held / n, abs=1e-4)
            out.setdefault(s["name"], {})[week] = (held, n)
    return out


def test_share_by_device_counts_the_runs_made(world: World) -> None:
    names = world.extra["site_names"]

    def device(site: str, model: ModelInfo) -> str:
        return f"{names[site]} · reader-1"

    assert _actual(_get(world, "admin", by="device")) == _expected({"a", "b"}, device)
    # Site A: week 1 holds 3 of 7 (the deleted read counts nowhere), week 2 1 of 5.
    mine = _actual(_get(world, "manager", by="device"))
    assert mine == {
        f"{names['a']} · reader-1": {week_label(WEEK_1): (3, 7), week_label(WEEK_2): (1, 5)}
    }


def test_share_by_model_version(world: World) -> None:
    def model(site: str, m: ModelInfo) -> str:
        return f"{m.name} {m.version}"

    assert _actual(_get(world, "admin", by="model")) == _expected({"a", "b"}, model)
    viewer = _actual(_get(world, "viewer", by="model"))
    assert viewer == _expected({"a"}, model)
    assert viewer["hi-wells 2.1"][week_label(WEEK_1)] == (2, 3)


def test_scope_and_filters(world: World) -> None:
    # A site A manager asking for site B gets nothing of it.
    other = _get(world, "manager", by="device", site_id=str(world.site_b))
    assert other["series"] == [] and other["x"] == []
    only_b = _actual(_get(world, "manager_b", by="model"))
    assert only_b == _expected({"b"}, lambda site, m: f"{m.name} {m.version}")
    # The date filters cut whole days: week 2 alone.
    day = WEEK_2.date().isoformat()
    week2 = _actual(_get(world, "admin", by="device", read_from=day, read_to=day))
    assert {w for by_week in week2.values() for w in by_week} == {week_label(WEEK_2)}


@pytest.mark.parametrize(
    ("params", "word"),
    [({"by": "site"}, "by"), ({"site_id": "x"}, "site_id"), ({"read_to": "2026-13-01"}, "read_to")],
)
def test_bad_filters_are_a_json_400(world: World, params: dict[str, str], word: str) -> None:
    token = world.actors["admin"].token
    resp = world.client.get(
        "/ui/charts/review-share.json", params=params, headers={"Cookie": f"mp_access={token}"}
    )
    assert resp.status_code == 400 and word in resp.json()["detail"]


def test_no_session_is_sent_to_sign_in(world: World) -> None:
    resp = world.client.get("/ui/charts/review-share.json?by=model", follow_redirects=False)
    assert resp.status_code == 303 and "/ui/login" in resp.headers["location"]
