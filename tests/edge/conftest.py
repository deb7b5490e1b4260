"""Fixtures for the appliance tests: a started `Appliance` on a temp dir with the fake detector."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.app import Appliance
from edge.config import EdgeSettings
from edge.db.store import Store
from tests.edge.plates import PLATE_A, fake_detector

SettingsFactory = Callable[..., EdgeSettings]


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SettingsFactory:
    # Settings must come only from the test, never from the developer's environment.
    for key in list(__import__("os").environ):
        if key.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)

    def factory(**over: Any) -> EdgeSettings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "share_dir": tmp_path / "share",
            "detector": fake_detector(PLATE_A),
            "retention": {"disk_floor_mb": 1},
        }
        base.update(over)
        return EdgeSettings(**base)

    return factory


@pytest.fixture
def make_app(make_settings: SettingsFactory) -> Iterator[Callable[..., Appliance]]:
    started: list[Appliance] = []

    def factory(settings: EdgeSettings | None = None, **kw: Any) -> Appliance:
        app = Appliance(settings or make_settings(), **kw)
        app.start()
        started.append(app)
        return app

    yield factory
    for app in reversed(started):
        if app.health.started:
            app.stop()


@pytest.fixture
def app(make_app: Callable[..., Appliance]) -> Appliance:
    return make_app()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated store on its own, for tests of the db layer and the services over it."""
    s = Store(tmp_path / "m.db")
    s.open()
    s.migrate()
    yield s
    s.close()
