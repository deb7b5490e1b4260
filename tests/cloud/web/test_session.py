"""Redirect targets and the Origin check, without a server."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from cloud.web.auth_pages import safe_next
from cloud.web.session import CsrfRefused, check_origin


def _request(headers: dict[str, str], scheme: str = "https") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"host", b"cloud.example.com"))
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "path": "/ui/devices",
            "query_string": b"",
            "headers": raw,
            "server": ("cloud.example.com", 443),
        }
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/samples?q=1", "/ui/samples?q=1"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/api/v1/users", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_same_origin_passes() -> None:
    check_origin(_request({"Origin": "https://cloud.example.com"}))
    check_origin(_request({"Referer": "https://cloud.example.com/ui/devices"}))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "https://evil.example"},
        {"Origin": "http://cloud.example.com"},  # scheme downgrade
        {"Origin": "null"},
        {"Referer": "https://cloud.example.com.evil.example/x"},
    ],
)
def test_other_origins_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(CsrfRefused):
        check_origin(_request(headers))
