"""Device health (problems first) and pooled trends against core's statistics."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

from cloud.web import data
from core.plate import PLATE_96
from core.stats import compute_statistics
from core.titre import DilutionSettings, row_results
from tests.cloud.factory import plate_calls

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def _device(seen: datetime | None = None, **status: object) -> dict[str, object]:
    last = {"online": True, "backlog": 0, "oldest_unsent_age_s": None}
    last["disk_free_bytes"] = 50 * 1024**3
    last.update(status)
    when = seen or NOW - timedelta(minutes=1)
    return {"status": "active", "last_status": last, "last_seen_at": when.isoformat()}


def test_health_states_and_problems() -> None:
    assert data.device_health(_device(), now=NOW).state == "online"
    assert data.device_health(_device(), now=NOW).problems == []
    offline = data.device_health(_device(online=False, backlog=50), now=NOW)
    assert offline.state == "offline" and "backlog of 50 runs" in offline.problems
    stale = data.device_health(_device(seen=NOW - timedelta(hours=2)), now=NOW)
    assert stale.state == "stale" and stale.problems == ["no status for 2 h"]
    disk = data.device_health(_device(disk_free_bytes=1024**3), now=NOW)
    assert disk.problems == ["only 1.0 GiB disk free"]
    refused = data.device_health(
        _device(sync_reason="upload_unauthorised", sync_message="The cloud refused its token."),
        now=NOW,
    )
    assert refused.problems == ["sync: The cloud refused its token."]
    assert data.device_health(_device(sync_reason="ok"), now=NOW).problems == []
    never = data.device_health({"status": "active", "last_status": None}, now=NOW)
    assert never.state == "never"
    revoked = data.device_health({"status": "revoked", "last_status": None}, now=NOW)
    assert revoked.state == "revoked"
    ranked = sorted([revoked, disk, never, offline], key=lambda h: -h.severity)
    assert ranked[0] is offline and ranked[-1] is revoked


def test_scope_from_me_matches_roles() -> None:
    site = uuid.uuid4()
    assert data.scope_from_me({"role": "admin", "site_ids": []}).all_sites
    scope = data.scope_from_me({"role": "viewer", "site_ids": [str(site)]})
    assert not scope.all_sites and scope.allows(site) and not scope.allows(uuid.uuid4())


def _stats(endpoints: tuple[int | None, ...]) -> dict[str, object]:
    calls = plate_calls(endpoints)
    rows = row_results(calls, PLATE_96, dilution=DilutionSettings())
    return compute_statistics(rows, protective_titre=40).model_dump(mode="json")


def test_pooled_trends_equal_statistics_of_the_pooled_rows() -> None:
    plates = [(5, 6, 5, 7, 4, 6, 5, None), (1, 2, 2, 3, 1, 2, 0, 2)]
    when = datetime(2026, 11, 24, tzinfo=timezone.utc)
    trends = data.pooled_trends([("North", when, _stats(p)) for p in plates])
    all_rows = [
        r
        for p in plates
        for r in row_results(plate_calls(p), PLATE_96, dilution=DilutionSettings())
    ]
    pooled = compute_statistics(all_rows, protective_titre=40)
    period = data.week_label(when)
    assert trends.periods == [period]
    assert pooled.gmt is not None and pooled.share_protective is not None
    assert math.isclose(trends.gmt["North"][period], pooled.gmt, abs_tol=0.01)
    assert math.isclose(trends.share["North"][period], pooled.share_protective, abs_tol=1e-4)
    assert trends.protective == {"North": 40.0}


def test_trends_skip_samples_without_counted_rows() -> None:
    when = datetime(2026, 11, 24, tzinfo=timezone.utc)
    trends = data.pooled_trends([("North", when, {"n": 0, "mean_log2": None})])
    assert trends.periods == [] and trends.gmt == {}
