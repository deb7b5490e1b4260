"""POST /api/runs/{run_id}/review and GET /api/review-queue against the real appliance."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient

from edge.app import Appliance
from edge.db.store import iso
from tests.edge.api.conftest import error_of, upload_and_wait


def make_old(appliance: Appliance, run_id: str, days: float = 2) -> None:
    when = datetime.now(timezone.utc) - timedelta(days=days)
    with appliance.store.write() as db:
        db.execute("UPDATE runs SET processed_at = ? WHERE run_id = ?", [iso(when), run_id])


def test_a_review_answers_with_the_updated_run(operator: TestClient) -> None:
    run_id = upload_and_wait(operator, "S-R1", seed=1)
    before = operator.get(f"/api/runs/{run_id}").json()
    assert before["rows"][0]["endpoint"] == 4 and before["edit"] == 0
    res = operator.post(f"/api/runs/{run_id}/review", json={"wells": {"A4": "agglutinated"}})
    assert res.status_code == 200, res.text
    run = res.json()
    assert run["run_id"] == run_id and run["edit"] == 1
    assert run["rows"][0]["endpoint"] == 3
    assert run["reviewed_by"].startswith("operator:") and run["reviewed_at"]
    a4 = next(w for w in run["wells"] if w["well_id"] == "A4")
    assert (a4["state"], a4["model_state"]) == ("agglutinated", "flowing")
    assert operator.get(f"/api/runs/{run_id}").json() == run
    sample = operator.get("/api/samples/S-R1").json()
    assert sample["distribution"] != {} and sample["csv"]["pending"] is False
    # Accept as read, no change: edit 2, nothing else moves. The name the reviewer typed is
    # recorded ahead of the session (one shared operator secret names nobody).
    body = {"accept": True, "reviewer": "  Ann\tLee "}
    res = operator.post(f"/api/runs/{run_id}/review", json=body)
    assert res.status_code == 200 and res.json()["edit"] == 2
    assert res.json()["rows"] == run["rows"]
    assert res.json()["reviewed_by"].startswith("Ann Lee (operator:")


def test_bad_reviews_get_a_clear_4xx(operator: TestClient, supervisor: TestClient) -> None:
    run_id = upload_and_wait(operator, "S-R2", seed=2)
    url = f"/api/runs/{run_id}/review"
    cases = [
        ({"wells": {"Q1": "flowing"}}, 422, "unknown_well", "not a well id"),
        ({"wells": {"I1": "flowing"}}, 422, "unknown_well", "not on this 96-well plate"),
        ({"wells": {"A1\u0000": "flowing"}}, 422, "unknown_well", "\\x00"),
        # "$" matched before a trailing newline: it slipped past the id check, echoed raw
        ({"wells": {"A1\n": "flowing"}}, 422, "unknown_well", "'A1\\n' is not a well id"),
        ({"wells": {"A1": "purple"}}, 422, "bad_state", "not a state a review may set"),
        ({"wells": {"A1": "unread"}}, 422, "bad_state", "flowing, agglutinated, invalid"),
        ({"wells": {"A1": "flow\u0000ing"}}, 422, "bad_state", "\\x00"),
        ({"wells": {}}, 422, "nothing_to_review", "accept the run as read"),
        ({"wells": ["A1"]}, 422, "invalid_input", ""),
        ({"wells": {"A1": 3}}, 422, "invalid_input", ""),
        ({"wells": {}, "accept": "yes"}, 422, "invalid_input", ""),
        ({"wells": {}, "by": "someone else"}, 422, "invalid_input", ""),
        ({"accept": True, "reviewer": "Ann\u0000"}, 422, "bad_reviewer", "reviewer's name"),
        ({"accept": True, "reviewer": "Ann\u202eeL"}, 422, "bad_reviewer", "reviewer's name"),
        ({"accept": True, "reviewer": "A" * 65}, 422, "invalid_input", ""),
        ({"accept": True, "reviewer": 7}, 422, "invalid_input", ""),
    ]
    for body, status, code, text in cases:
        res = operator.post(url, json=body)
        assert res.status_code == status, (body, res.text)
        err = error_of(res)
        assert err["code"] == code, (body, err)
        assert text in err["message"], (body, err)
    res = operator.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert res.status_code == 422
    error_of(res)
    res = operator.post(
        "/api/runs/00000000-0000-4000-8000-00000000dead/review", json={"accept": True}
    )
    assert res.status_code == 404 and error_of(res)["code"] == "not_found"
    assert operator.get(f"/api/runs/{run_id}").json()["edit"] == 0

    assert supervisor.delete(f"/api/runs/{run_id}", params={"reason": "cracked"}).status_code == 204
    res = operator.post(url, json={"wells": {"A1": "invalid"}})
    assert res.status_code == 422 and error_of(res)["code"] == "run_deleted"


def test_operators_review_a_day_supervisors_any_age(
    operator: TestClient, supervisor: TestClient, appliance: Appliance
) -> None:
    run_id = upload_and_wait(operator, "S-R3", seed=3)
    make_old(appliance, run_id, days=1.5)
    url = f"/api/runs/{run_id}/review"
    res = operator.post(url, json={"wells": {"A1": "invalid"}})
    assert res.status_code == 403
    err = error_of(res)
    assert err["code"] == "supervisor_required" and "more than a day old" in err["message"]
    res = supervisor.post(url, json={"wells": {"A1": "invalid"}})
    assert res.status_code == 200 and res.json()["edit"] == 1
    assert res.json()["reviewed_by"].startswith("supervisor:")


def test_the_review_queue_over_http(operator: TestClient, appliance: Appliance) -> None:
    run_id = upload_and_wait(operator, "S-R4", seed=4)
    queue = operator.get("/api/review-queue")
    assert queue.status_code == 200
    # The scripted plate has a row with no flowing well at all, not an unread one: no review due.
    assert run_id not in [q["run_id"] for q in queue.json()]
    with appliance.store.write() as db:  # a held run, as the plate gate stores it
        db.execute("UPDATE runs SET needs_review = 1, review_reasons = '[\"blurry\"]'")
    queue = operator.get("/api/review-queue").json()
    assert [q["run_id"] for q in queue] == [run_id] and queue[0]["needs_review"]
    assert operator.get("/api/review-queue", params={"limit": 0}).status_code == 422


def test_concurrent_reviews_of_one_run_get_distinct_edits(
    operator: TestClient, appliance: Appliance
) -> None:
    # Held when written (fills a gap: no test raced two saves). Each review must read the
    # edit the previous one wrote: eight at once are edits 1..8, each audited once.
    run_id = upload_and_wait(operator, "S-R5", seed=5)
    url = f"/api/runs/{run_id}/review"
    edits: list[int] = []
    states = ("flowing", "agglutinated", "invalid")

    def review(i: int) -> None:
        res = operator.post(url, json={"wells": {"A1": states[i % 3]}})
        assert res.status_code == 200, res.text
        edits.append(res.json()["edit"])

    threads = [threading.Thread(target=review, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(edits) == list(range(1, 9))
    assert operator.get(f"/api/runs/{run_id}").json()["edit"] == 8
    db = appliance.store.read()
    assert db.execute("SELECT count(*) FROM audit WHERE action = 'run.review'").fetchone()[0] == 8
