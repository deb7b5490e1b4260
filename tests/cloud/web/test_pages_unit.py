"""Page helpers that need no server: database trouble becomes a 503 page."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from cloud.web.pages import _query
from cloud.web.session import ApiProblem


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    # A fresh thread: Playwright's sync API may leave an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.mark.parametrize(
    "error", [OperationalError("select 1", {}, Exception("down")), SQLAlchemyTimeout("pool")]
)
def test_unavailable_database_is_a_503(error: Exception) -> None:
    def failing() -> int:
        raise error

    with pytest.raises(ApiProblem) as problem:
        run(_query(failing))
    assert problem.value.status == 503


def test_query_returns_the_result() -> None:
    assert run(_query(lambda: 42)) == 42
