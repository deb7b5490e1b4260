"""Chromium (headless, the machine's own) driving the touchscreen pages of a real appliance."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ui.kiosk import OPERATOR_SECRET, Kiosk, start_kiosk

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "ui"
VIEWPORTS = [(800, 480), (1024, 600), (1280, 800)]

if shutil.which(CHROMIUM) is None:  # pragma: no cover - CI installs it (apt-get install chromium)
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    tmp = tmp_path_factory.mktemp("kiosk")
    with pytest.MonkeyPatch.context() as mp:
        # Settings come only from the test, never from the environment or a stray .env file.
        for key in list(os.environ):
            if key.startswith("MICROPLATE_EDGE_"):
                mp.delenv(key)
        mp.chdir(tmp)
        k = start_kiosk(tmp)
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1024, "height": 600}, has_touch=True)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any, kiosk: Kiosk) -> Iterator[Any]:
    """A signed-in operator page; page errors fail the test."""
    errors: list[str] = []
    pg = context.new_page()
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    res = context.request.post(f"{kiosk.url}/api/auth/sign-in", data={"secret": OPERATOR_SECRET})
    assert res.ok, res.text()
    yield pg
    assert errors == [], errors


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
