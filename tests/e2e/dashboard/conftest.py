"""A real cloud (uvicorn on a free loopback port, own Postgres database, SeaweedFS) with the
dashboard mounted, seeded data, and the machine's Chromium driven by Playwright."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud.settings import CloudSettings
from tests.cloud.conftest import (  # noqa: F401  (s3_server is a fixture)
    S3Server,
    free_port,
    make_settings,
    private_database,
    s3_server,
)
from tests.e2e.dashboard.seed import PASSWORD, Seeded, seed

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "dashboard"


@dataclass
class Cloud:
    url: str
    settings: CloudSettings
    data: Seeded
    app: object


@pytest.fixture(scope="package")
def cloud(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:  # noqa: F811
    import uvicorn

    from cloud.app import create_app
    from cloud.db import migrate
    from cloud.web import mount_dashboard

    with private_database("mp_dash") as url:
        migrate(url)
        tmp = tmp_path_factory.mktemp("dash")
        settings = make_settings(
            url,
            tmp,
            s3_server,
            login_rate_per_minute=10_000,
            # The sync test's broker writes its pid here; provisioning then SIGHUPs it.
            mosquitto_pid_file=tmp / "mosquitto.pid",
        )
        data = seed(settings)
        app = create_app(settings)
        mount_dashboard(app)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="dash-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the cloud app did not start")
            time.sleep(0.05)
        try:
            yield Cloud(url=f"http://127.0.0.1:{port}", settings=settings, data=data, app=app)
        finally:
            server.should_exit = True
            thread.join(timeout=15)


# Package scope: Playwright's sync API runs an event loop in the main thread while it is
# open, which would break asyncio.run() in test packages that come after this one.
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser, cloud: Cloud):  # type: ignore[no-untyped-def]
    context = browser.new_context(
        base_url=cloud.url, viewport={"width": 1280, "height": 800}, accept_downloads=True
    )
    context.set_default_timeout(10_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def sign_in(page, cloud: Cloud, role: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/ui/login")
    page.get_by_label("E-mail address").fill(cloud.data.emails[role])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/")


def shot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
