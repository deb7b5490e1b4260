"""Property-based requests from the OpenAPI schema: no input may produce a server error.

Bounded on purpose (a few examples per operation) so it stays well under a minute. Calls go
out signed in as an admin (device routes with a device token) so generated input reaches
the handlers instead of bouncing off authentication.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.world import World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    cfg = make_settings(
        migrated_db, tmp_path_factory.mktemp("fuzz"), s3_server, login_rate_per_minute=100_000
    )
    with open_client(cfg) as client:
        yield build_world(cfg, client)


def _runner(operation: Any, headers: dict[str, str]) -> Any:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=5,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    return run


def test_no_server_errors(world: World) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.client.app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:
        if operation.path.startswith("/api/v1/device/"):
            headers = {"Authorization": f"Bearer {world.device_token_a}"}
        else:
            headers = world.actors["admin"].headers

        run = _runner(operation, headers)
        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
