"""Schema-driven fuzzing (schemathesis): whatever a signed-in user sends, no 5xx but 503/507."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.edge.api.conftest import sign_in

# Sign-out and drop-elevation would end the very session the fuzzer uses.
SKIP = {("POST", "/api/auth/sign-out"), ("POST", "/api/auth/drop-elevation")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_server_errors_for_generated_requests(app: FastAPI) -> None:
    token = sign_in(TestClient(app), supervisor=True)
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, headers={"Authorization": f"Bearer {token}"}
    )
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        checked += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            if case.query:
                case.query.pop("wait", None)  # a ticket wait only slows the run down
            res = case.call(headers=headers)
            if res.status_code >= 500 and res.status_code not in (503, 507):
                failures.append(
                    f"{case.method} {case.formatted_path} -> {res.status_code}: {res.text[:200]}"
                )
            if res.status_code >= 400:
                assert "error" in res.json() or res.status_code == 503, res.text

        check()
    assert checked >= 20
    assert not failures, "\n".join(failures[:20])
