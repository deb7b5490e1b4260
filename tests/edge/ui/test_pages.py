"""The touchscreen pages without a browser: routing, sign-in redirects, languages, assets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.titre import ROW_FLAGS
from core.wells import WellFlag, WellState
from edge.app import Appliance
from edge.detect.gate import REVIEW_REASONS
from edge.schemas import CameraStatus, RunStatus
from edge.ui import i18n, mount_ui
from edge.ui.pages import CSP, appliance_languages
from tests.edge.api.conftest import make_settings, sign_in

UI = Path(__file__).resolve().parents[3] / "edge" / "ui"
PAGES = [
    "/ui/capture",
    "/ui/samples",
    "/ui/review",
    "/ui/status",
    "/ui/calibration",
    "/ui/settings",
]
THAI = re.compile(r"[\u0E00-\u0E7F]")
# Strings that are the same in every language (names, units, symbols).
SAME_IN_EVERY_LANGUAGE = {
    "app.title",
    "result.gmt",
    "stat.gmt",
    "stat.cv_pct",
    "keypad.letters",
    "keypad.digits",
    "keypad.delete",
}


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(make_settings(tmp_path))
    app.start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def app(appliance: Appliance) -> FastAPI:
    from edge.api import create_app

    api = create_app(appliance)
    mount_ui(api, appliance)
    return api


@pytest.fixture
def anon(app: FastAPI) -> TestClient:
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def operator(app: FastAPI) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    sign_in(client)
    return client


@pytest.mark.parametrize(
    "path", [*PAGES, "/ui/runs/abc-123", "/ui/samples/S-001", "/ui/review/abc-123"]
)
def test_pages_send_a_stranger_to_sign_in(anon: TestClient, path: str) -> None:
    res = anon.get(path)
    assert res.status_code == 303
    assert res.headers["location"] == f"/ui/sign-in?next={path}"


def test_root_goes_to_capture(anon: TestClient) -> None:
    res = anon.get("/")
    assert res.status_code == 303 and res.headers["location"] == "/ui/capture"


def test_sign_in_page_is_open_and_carries_no_navigation(anon: TestClient) -> None:
    res = anon.get("/ui/sign-in")
    assert res.status_code == 200
    assert 'id="secret"' in res.text and 'type="password"' in res.text
    assert 'class="tabs"' not in res.text
    assert res.headers["content-security-policy"] == CSP


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/samples", "/ui/samples"),
        ("//evil.example/ui/x", "/ui/capture"),
        ("https://evil.example/", "/ui/capture"),
        ("/ui//evil.example", "/ui/capture"),
        ("/api/runs", "/ui/capture"),
    ],
)
def test_signed_in_sign_in_page_redirects_only_to_our_pages(
    operator: TestClient, target: str, expected: str
) -> None:
    res = operator.get("/ui/sign-in", params={"next": target})
    assert res.status_code == 303
    assert res.headers["location"] == expected


@pytest.mark.parametrize(
    "path", [*PAGES, "/ui/runs/abc-123", "/ui/samples/S-001", "/ui/review/abc-123"]
)
def test_pages_render_for_an_operator(operator: TestClient, path: str) -> None:
    res = operator.get(path)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/html")
    assert res.headers["content-security-policy"] == CSP
    assert '<html lang="en">' in res.text
    assert 'aria-current="page"' in res.text or path.count("/") > 2
    boot = re.search(r'<script id="boot" type="application/json">(.*?)</script>', res.text, re.S)
    assert boot is not None
    data = json.loads(boot.group(1))
    assert data["lang"] == "en" and data["strings"]["nav.capture"] == "Capture"


def test_run_page_rejects_a_malformed_id(operator: TestClient) -> None:
    assert operator.get("/ui/runs/..%2F..%2Fetc").status_code in (404, 422)


def test_boot_json_cannot_break_out_of_its_script_element(operator: TestClient) -> None:
    # A path segment cannot hold "/", but "<!--<script>" would also upset the HTML parser.
    res = operator.get("/ui/samples/" + "<!--<script>alert(1)")
    assert res.status_code == 200
    assert "<!--<script>alert(1)" not in res.text
    boot = re.search(r'<script id="boot" type="application/json">(.*?)</script>', res.text, re.S)
    assert boot is not None
    assert json.loads(boot.group(1))["sample_number"] == "<!--<script>alert(1)"


def test_thai_is_chosen_by_the_cookie(operator: TestClient) -> None:
    operator.cookies.set(i18n.LANG_COOKIE, "th")
    res = operator.get("/ui/capture")
    assert '<html lang="th">' in res.text
    assert "ถ่ายเพลต" in res.text  # the Capture tab
    assert 'data-lang="en"' in res.text  # the switch offers English back


def test_an_unknown_language_cookie_falls_back_to_english(operator: TestClient) -> None:
    operator.cookies.set(i18n.LANG_COOKIE, "xx")
    assert '<html lang="en">' in operator.get("/ui/status").text


def test_translations_have_the_same_keys_and_thai_is_written_in_thai() -> None:
    en = json.loads((i18n.TRANSLATIONS_DIR / "en.json").read_text(encoding="utf-8"))
    for code in i18n.LANGUAGES:
        other = json.loads((i18n.TRANSLATIONS_DIR / f"{code}.json").read_text(encoding="utf-8"))
        assert set(other) == set(en), f"{code}: {sorted(set(other) ^ set(en))}"
    th = i18n.strings("th")
    untranslated = [k for k in en if k not in SAME_IN_EVERY_LANGUAGE and not THAI.search(th[k])]
    assert untranslated == []
    for key, text in en.items():
        # Placeholders must survive translation.
        assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", th[key])), key


def _used_keys() -> tuple[set[str], set[str]]:
    """Literal keys used by templates and scripts, and the prefixes of computed keys."""
    literal: set[str] = set()
    prefixes: set[str] = set()
    for path in (UI / "templates").glob("*.html"):
        literal |= set(re.findall(r"t\['([\w.]+)'\]", path.read_text(encoding="utf-8")))
        prefixes |= set(re.findall(r"t\['([\w.]+\.)' ~", path.read_text(encoding="utf-8")))
    for path in (UI / "static").glob("*.js"):
        text = path.read_text(encoding="utf-8")
        literal |= set(re.findall(r"\bt\(\"([\w.]+)\"", text))
        literal |= set(re.findall(r"\"((?:result|stat)\.[a-z_]+)\"", text))
        prefixes |= set(re.findall(r"t\(`([\w.]+\.)\$\{", text))
        prefixes |= set(re.findall(r"`((?:error|progress)\.)\$\{", text))
    return literal, prefixes


def test_every_key_the_pages_use_exists() -> None:
    strings = i18n.strings("en")
    literal, prefixes = _used_keys()
    assert len(literal) > 80  # the scan found the keys, so the check means something
    assert sorted(k for k in literal if k not in strings) == []
    assert {"state.", "flag.", "status.", "nav."} <= prefixes


@pytest.mark.parametrize(
    ("prefix", "values"),
    [
        ("state.", get_args(WellState)),
        ("flag.", (*ROW_FLAGS, *get_args(WellFlag))),
        ("status.", get_args(RunStatus)),
        ("status.cam.", get_args(CameraStatus.model_fields["state"].annotation)),
        ("review.", REVIEW_REASONS),
        ("status.", ("needs_review",)),
        ("rv.short.", get_args(WellState)),
    ],
)
def test_computed_keys_cover_every_value_the_appliance_sends(
    prefix: str, values: tuple[str, ...]
) -> None:
    assert values
    for lang in i18n.LANGUAGES:
        strings = i18n.strings(lang)
        assert [v for v in values if f"{prefix}{v}" not in strings] == [], lang


def test_no_asset_comes_from_another_host() -> None:
    svg_namespace = "http://www.w3.org/2000/svg"
    for path in [*(UI / "templates").glob("*.html"), *(UI / "static").glob("*")]:
        text = path.read_text(encoding="utf-8").replace(svg_namespace, "")
        assert not re.search(r"https?://|//cdn|@import", text), path.name


def test_static_assets_are_served(anon: TestClient) -> None:
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        res = anon.get(f"/static/{name}")
        assert res.status_code == 200 and kind in res.headers["content-type"]
    assert anon.get("/static/../pages.py").status_code == 404


def test_settings_page_offers_only_languages_the_appliance_accepts(operator: TestClient) -> None:
    offered = appliance_languages()
    assert "en" in offered and set(offered) <= set(i18n.LANGUAGES)
    page = operator.get("/ui/settings").text
    select = re.search(r'<select id="language".*?</select>', page, re.S)
    assert select is not None
    assert set(re.findall(r'option value="(\w+)"', select.group(0))) == set(offered)


def test_every_page_route_needs_a_session(anon: TestClient) -> None:
    """Built from the router's table: a page added without the session check fails here."""
    from fastapi.routing import APIRoute

    from edge.ui.pages import router

    open_pages = {"/", "/ui/sign-in"}
    checked = 0
    for route in router.routes:
        assert isinstance(route, APIRoute)
        assert route.methods == {"GET"}, route.path  # pages only read; the API changes things
        if route.path in open_pages:
            continue
        path = route.path.replace("{run_id}", "abc-1").replace("{sample_number}", "S-1")
        res = anon.get(path)
        assert res.status_code == 303, path
        assert res.headers["location"].startswith("/ui/sign-in?next="), path
        checked += 1
    assert checked >= 7


# Every error code the API and the facade can answer with (docs/edge-api.md, edge/errors.py).
API_ERROR_CODES = [
    "unauthenticated", "invalid_credentials", "supervisor_required", "cross_origin", "not_found",
    "no_calibration", "conflict", "too_large", "unsupported_media_type", "invalid_input",
    "invalid_calibration", "locked_out", "busy", "capture_unavailable", "no_preview",
    "preview_busy", "disk_full", "internal_error", "not_ready", "bad_sample_number",
    "bad_image", "empty_image", "run_deleted", "reason_required", "unknown_well", "bad_state",
    "nothing_to_review", "run_superseded", "review_unavailable",
]  # fmt: skip


@pytest.mark.parametrize("lang", list(i18n.LANGUAGES))
def test_every_api_error_code_has_operator_words(lang: str) -> None:
    strings = i18n.strings(lang)
    assert [c for c in API_ERROR_CODES if f"error.{c}" not in strings] == []
