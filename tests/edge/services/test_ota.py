"""The appliance's model updates (edge.services.ota) through the real appliance: the shipped
hi-wells classifier reads calibrated plates (ONNX Runtime on the CPU), a signed release is
served by a real HTTP server and fetched by the real `edge.sync.model_api.ModelApi`, and every
step is checked on the reports the server received, the model in force and the state file.

The MQTT delivery of the notice and the real cloud are in tests/sync/test_ota_rollout.py.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from core.calibration import CalibrationGrid
from core.ota import generate_private_key, public_key_text
from core.plate import PLATE_96
from core.rollout import ModelNotice, ModelReport
from edge.app import Appliance
from edge.detect.settings import SHIPPED_WELLS_DIR
from edge.schemas import RunRequest
from edge.services.ota import OtaState, wells_manifest
from edge.sync.model_api import ModelApi
from tests.edge.conftest import SettingsFactory
from tests.edge.ota_release import (
    SHIPPED_VERSION,
    ModelServer,
    notice_for,
    release_dir,
    sign_release,
)
from tests.edge.plates import HEIGHT, MARGIN, PLATE_A, WIDTH, jpeg, plate_image

GRID = CalibrationGrid.uniform(WIDTH, HEIGHT, PLATE_96, MARGIN)
KEY = generate_private_key()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


_seed = iter(range(1, 1_000_000))


def submit(app: Appliance) -> str:
    """One plate (new bytes each time) through the whole pipeline; its run id."""
    data = jpeg(plate_image(PLATE_A, seed=next(_seed)))
    ticket = app.intake.submit_image(
        data, "p.jpg", RunRequest(sample_number="S-001", operator="ann")
    )
    state = app.intake.wait(ticket.id, timeout=30)
    assert state.state == "done", state
    assert state.run_id
    return state.run_id


@pytest.fixture
def server() -> Iterator[ModelServer]:
    srv = ModelServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "model-signing.pub"
    path.write_text(public_key_text(KEY) + "\n", encoding="ascii")
    return path


@pytest.fixture
def ota_settings(
    make_settings: SettingsFactory, tmp_path: Path, key_file: Path
) -> Callable[..., Any]:
    running = tmp_path / "hi-wells"
    if not running.exists():
        shutil.copytree(SHIPPED_WELLS_DIR, running)

    def factory(**ota: Any) -> Any:
        conf = {"public_key_file": str(key_file), "retry_max_s": 0.5, **ota}
        return make_settings(detector={"type": "fake", "wells_model_dir": str(running)}, ota=conf)

    return factory


@pytest.fixture
def start_app(make_app: Callable[..., Appliance], server: ModelServer) -> Callable[..., Appliance]:
    def factory(settings: Any, api: type[ModelApi] | ModelApi = ModelApi) -> Appliance:
        """`api`: the model API client (class or instance) the OTA service talks through."""
        app = make_app(settings)
        if app.calibration.grid is None:
            app.calibration.set(GRID, actor="sup")
        # Sync is not configured here: hand the OTA service the model API directly.
        app.ota.stop()
        app.ota.start(api(server.url, server.token, timeout_s=10) if isinstance(api, type) else api)
        return app

    return factory


def offer(server: ModelServer, tmp_path: Path, version: str, **kw: Any) -> ModelNotice:
    folder = release_dir(tmp_path / f"release-{version}", **kw)
    signed = sign_release(folder, KEY, version=version)
    server.folder = folder
    server.notice = notice_for(signed)
    return server.notice


def deliver(app: Appliance, notice: ModelNotice) -> None:
    app.ota.notice(notice.model_dump_json().encode())


def version_in_force(app: Appliance) -> str:
    assert app.reading.wells is not None
    return str(app.reading.wells.model.version)


def test_a_signed_release_shadows_then_switches_and_a_restart_keeps_it(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    settings = ota_settings()
    app = start_app(settings)
    assert version_in_force(app) == SHIPPED_VERSION
    notice = offer(server, tmp_path, "3.2.0")
    deliver(app, notice)
    wait_for(lambda: server.states() == ["downloaded", "shadowing"], "shadowing")
    assert (app.ota.status()["shadow"] or {}).get("loaded") is True
    shadow_runs = [submit(app) for _ in range(3)]
    wait_for(lambda: "switched" in server.states(), "the switch report")
    # Only the model in force counted while the candidate shadowed.
    for run_id in shadow_runs:
        assert app.runs.get_run(run_id).model.get("version") == SHIPPED_VERSION
    assert version_in_force(app) == "3.2.0"
    last = server.reports[-1]
    assert last["state"] == "switched" and last["shadow_plates"] == 3
    assert last["agreement"] is not None and last["agreement"] >= 0.9
    assert last["current_ms"] > 0 and last["candidate_ms"] > 0
    assert last["assignment_id"] == str(notice.assignment_id)
    status = app.health.status()
    assert status.ota is not None
    assert status.ota["active"] == {"name": "hi-wells", "version": "3.2.0", "source": "update"}
    assert status.ota["shadow"] is None
    state = json.loads((settings.data_dir / "ota" / "state.json").read_text())
    assert state["active"]["version"] == "3.2.0" and state["candidate"] is None
    assert not list((settings.data_dir / "ota" / "staging").iterdir())
    after = submit(app)
    assert app.runs.get_run(after).model.get("version") == "3.2.0"
    # The retained notice delivered again (a reconnect) starts nothing.
    n = len(server.reports)
    deliver(app, notice)
    time.sleep(0.5)
    assert len(server.reports) == n
    app.stop()

    again = start_app(settings)
    assert version_in_force(again) == "3.2.0"
    assert again.health.status().classifier is not None
    assert again.health.status().classifier["version"] == "3.2.0"  # type: ignore[index]


def test_a_candidate_that_disagrees_is_rolled_back_and_the_model_in_force_stays(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    settings = ota_settings()
    app = start_app(settings)
    deliver(app, offer(server, tmp_path, "3.3.0", perturbed=True))
    wait_for(lambda: (app.ota.status()["shadow"] or {}).get("loaded") is True, "shadowing")
    runs = []
    for _ in range(3):
        runs.append(submit(app))
        if "rolled_back" in server.states():
            break
    wait_for(lambda: "rolled_back" in server.states(), "the rollback report")
    last = server.reports[-1]
    assert last["state"] == "rolled_back" and last["reason"]
    assert "agreement" in last["reason"] or "needs_review" in last["reason"]
    assert version_in_force(app) == SHIPPED_VERSION
    for run_id in runs:
        run = app.runs.get_run(run_id)
        assert run.model.get("version") == SHIPPED_VERSION and not run.needs_review
    assert app.health.status().ota["shadow"] is None  # type: ignore[index]
    assert not list((settings.data_dir / "ota" / "models").iterdir())
    assert app.runs.get_run(submit(app)).model.get("version") == SHIPPED_VERSION


def _tamper(folder: Path) -> None:
    path = folder / "untilted.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _wrong_key(server: ModelServer, folder: Path) -> None:
    signed = sign_release(folder, generate_private_key(), version="3.4.0")
    server.notice = notice_for(signed)


def _forged(server: ModelServer, folder: Path) -> None:
    doc = json.loads((folder / "manifest.signed.json").read_text())
    doc["manifest"]["metrics"]["validation.accuracy"] = 0.999  # signature no longer matches
    (folder / "manifest.signed.json").write_text(json.dumps(doc))
    from core.ota import parse_signed

    forged = parse_signed((folder / "manifest.signed.json").read_bytes())
    server.notice = notice_for(forged)


def _other_format(server: ModelServer, folder: Path) -> None:
    server.notice = notice_for(sign_release(folder, KEY, version="3.4.0", plate_formats=(384,)))


def _notice_names_another_version(server: ModelServer, folder: Path) -> None:
    # the manifest's sha256 is the notice's, but the notice names another version: the
    # status and the reports would name a model that is not the one loaded
    assert server.notice is not None
    server.notice = server.notice.model_copy(update={"version": "9.9.9"})


def _another_model(server: ModelServer, folder: Path) -> None:
    # signed with the right key, but a release of another model: not a fine-tune of this one
    server.notice = notice_for(sign_release(folder, KEY, version="3.4.0", name="plate-detector"))


def _cut(server: ModelServer, folder: Path) -> None:
    server.cut = {"tilted.onnx": (folder / "tilted.onnx").stat().st_size // 2}


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda s, f: _tamper(f), "tampered"),
        (_wrong_key, "wrong_key"),
        (_forged, "bad_signature"),
        (_other_format, "plate_format"),
        (_cut, "truncated"),
        (_notice_names_another_version, "tampered"),
        (_another_model, "model"),
    ],
    ids=[
        "tampered",
        "wrong-key",
        "bad-signature",
        "plate-format",
        "cut-download",
        "notice-names-another-version",
        "another-model",
    ],
)
def test_a_bad_release_is_refused_and_the_model_in_force_keeps_reading(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
    spoil: Callable[[ModelServer, Path], None],
    reason: str,
) -> None:
    settings = ota_settings(download_attempts=2)
    app = start_app(settings)
    offer(server, tmp_path, "3.4.0")
    assert server.folder is not None
    spoil(server, server.folder)
    assert server.notice is not None
    deliver(app, server.notice)
    wait_for(lambda: "refused" in server.states(), "the refusal report")
    assert server.states() == ["refused"]
    assert server.reports[0]["reason"].startswith(f"{reason}:"), server.reports[0]
    assert version_in_force(app) == SHIPPED_VERSION
    assert app.health.status().ota["shadow"] is None  # type: ignore[index]
    assert app.health.status().ota["last"]["state"] == "refused"  # type: ignore[index]
    ota = settings.data_dir / "ota"
    assert not any((ota / "staging").iterdir()) and not (ota / "models").exists()
    assert app.runs.get_run(submit(app)).model.get("version") == SHIPPED_VERSION


def test_an_older_or_equal_release_is_refused_before_a_byte_of_it_is_fetched(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    """Anti-rollback: a signed release stays valid for good, so whoever controls the broker or
    the cloud could offer an old (known-bad) one again. It must be newer than the model in
    force and than every version switched to before, by version precedence (2.10 > 2.4)."""
    settings = ota_settings()
    app = start_app(settings)

    def refused(version: str) -> str:
        server.reports.clear()
        server.served.clear()
        deliver(app, offer(server, tmp_path, version))
        wait_for(lambda: "refused" in server.states(), f"the refusal of {version}")
        assert server.states() == ["refused"]
        assert not [f for f in server.served if f.endswith(".onnx")], server.served
        reason = str(server.reports[0]["reason"])
        assert reason.startswith("downgrade:"), reason
        return reason

    assert SHIPPED_VERSION in refused(SHIPPED_VERSION)  # the same version again
    refused("1.9.9")
    deliver(app, offer(server, tmp_path, "2.10.0"))  # newer than 2.4.0, though "2.1" < "2.4"
    wait_for(lambda: (app.ota.status()["shadow"] or {}).get("loaded") is True, "shadowing")
    for _ in range(3):
        submit(app)
    wait_for(lambda: "switched" in server.states(), "the switch")
    assert version_in_force(app) == "2.10.0"
    assert "2.10.0" in refused("2.9.0")
    app.stop()

    # The engineer points the appliance back at the shipped model (the switch forgotten): the
    # newest version switched to still sets the floor.
    state_file = settings.data_dir / "ota" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["highest"] == "2.10.0"
    state["active"] = None
    state_file.write_text(json.dumps(state))
    app = start_app(settings)
    assert version_in_force(app) == SHIPPED_VERSION
    assert "2.10.0" in refused("2.5.0")
    assert version_in_force(app) == SHIPPED_VERSION
    assert app.runs.get_run(submit(app)).model.get("version") == SHIPPED_VERSION


def test_a_download_cut_once_is_resumed_where_it_stopped(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    app = start_app(ota_settings())
    notice = offer(server, tmp_path, "3.5.0")
    assert server.folder is not None
    half = (server.folder / "untilted.onnx").stat().st_size // 2
    server.cut, server.cut_times = {"untilted.onnx": half}, 1
    deliver(app, notice)
    wait_for(lambda: "shadowing" in server.states(), "shadowing")
    assert server.ranges == [f"untilted.onnx:bytes={half}-"]


def test_a_release_that_does_not_load_fails_without_touching_the_model_in_force(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    app = start_app(ota_settings())
    deliver(app, offer(server, tmp_path, "3.6.0", broken=True))
    wait_for(lambda: "failed" in server.states(), "the failure report")
    assert server.states() == ["downloaded", "failed"]
    assert server.reports[-1]["reason"].startswith("load:")
    assert version_in_force(app) == SHIPPED_VERSION
    assert app.runs.get_run(submit(app)).model.get("version") == SHIPPED_VERSION


def test_without_a_key_updates_are_refused_and_the_status_says_why(
    make_settings: SettingsFactory,
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    app = start_app(make_settings(detector={"type": "fake", "wells_model_dir": None}))
    status = app.health.status().ota
    assert status is not None and status["enabled"] is False
    assert "no model signing key" in status["disabled"]
    deliver(app, offer(server, tmp_path, "3.7.0"))
    wait_for(lambda: bool(server.reports), "the refusal report")
    assert server.states() == ["refused"]
    assert "no model signing key" in server.reports[0]["reason"]


def test_reports_wait_while_the_cloud_is_down_and_go_in_order(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    app = start_app(ota_settings())
    server.report_status = 503
    deliver(app, offer(server, tmp_path, "3.8.0"))
    wait_for(lambda: app.ota.status()["reports_pending"] == 2, "two queued reports")
    submit(app)
    assert app.ota.status()["reports_pending"] == 3
    server.report_status = 200
    wait_for(lambda: app.ota.status()["reports_pending"] == 0, "the reports delivered")
    assert server.states() == ["downloaded", "shadowing", "shadowing"]
    assert [r["shadow_plates"] for r in server.reports] == [0, 0, 1]


def test_shadowing_survives_a_restart_and_a_withdrawn_notice_drops_the_candidate(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    settings = ota_settings()
    app = start_app(settings)
    deliver(app, offer(server, tmp_path, "3.9.0"))
    wait_for(lambda: (app.ota.status()["shadow"] or {}).get("loaded") is True, "shadowing")
    submit(app)
    app.stop()
    again = start_app(settings)
    wait_for(lambda: (again.ota.status()["shadow"] or {}).get("loaded") is True, "resumed")
    assert again.ota.status()["shadow"]["plates"] == 1  # type: ignore[index]
    assert version_in_force(again) == SHIPPED_VERSION
    again.ota.notice(b"")  # the cloud withdrew the notice (an empty retained message)
    wait_for(lambda: again.ota.status()["shadow"] is None, "the candidate dropped")
    assert not list((settings.data_dir / "ota" / "models").iterdir())
    assert version_in_force(again) == SHIPPED_VERSION


def test_the_state_file_is_written_whole_and_read_back(tmp_path: Path) -> None:
    state = OtaState(tmp_path / "ota")
    state.active = {"name": "hi-wells", "version": "3.2.0", "directory": str(tmp_path / "m")}
    state.ended = {str(uuid.uuid4()): "switched"}
    state.save()
    assert not [p for p in (tmp_path / "ota").iterdir() if p.name.startswith(".")]
    back = OtaState(tmp_path / "ota")
    assert back.active_dir() == tmp_path / "m" and back.ended == state.ended
    (tmp_path / "ota" / "state.json").write_text("{not json")
    assert OtaState(tmp_path / "ota").active_dir() is None


def test_the_release_is_read_with_the_running_classifiers_input_and_classes(
    tmp_path: Path,
) -> None:
    running = json.loads((SHIPPED_WELLS_DIR / "manifest.json").read_text())
    signed = sign_release(release_dir(tmp_path / "r"), KEY, version="3.0.0")
    doc = wells_manifest(running, signed.manifest)
    assert doc["version"] == "3.0.0" and doc["input"] == running["input"]
    assert doc["modes"]["tilted"]["classes"] == running["modes"]["tilted"]["classes"]
    assert set(doc["modes"]["untilted"]["files"]) == {"fp32"}


def test_a_notice_heard_before_the_cloud_recorded_it_is_fetched_again(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    """The cloud marks a notice sent once the broker acknowledged it: the device may ask for
    the offer before that (404, or the previous assignment) and must ask again, not refuse."""
    app = start_app(ota_settings())
    notice = offer(server, tmp_path, "2.10.0")
    server.offer_status = 404
    deliver(app, notice)
    time.sleep(1.5)
    assert server.reports == []
    server.offer_status = 200
    wait_for(lambda: "shadowing" in server.states(), "shadowing after the retry")
    assert server.states() == ["downloaded", "shadowing"]


# -- the shadow state machine on its own (results stand in for plates read by both models) --


class _Classifier:
    closed = False

    def close(self) -> None:
        self.closed = True


class _Slot:
    def __init__(self) -> None:
        self.promoted: list[Any] = []

    def classifier_manifest(self) -> dict[str, Any] | None:
        return None

    def load_classifier(self, directory: Path) -> Any:
        raise AssertionError("not loaded here")

    def promote(self, classifier: Any) -> None:
        self.promoted.append(classifier)


def _plate(states: list[str], needs_review: bool = False) -> Any:
    from types import SimpleNamespace

    wells = {f"W{i}": SimpleNamespace(state=s) for i, s in enumerate(states)}
    return SimpleNamespace(wells=wells, needs_review=needs_review)


def _shadowing(tmp_path: Path, key_file: Path, **notice: Any) -> tuple[Any, _Slot, _Classifier]:
    from edge.config import OtaSettings
    from edge.services.ota import Candidate, OtaService

    slot = _Slot()
    svc = OtaService(
        OtaSettings(public_key_file=key_file),
        OtaState(tmp_path / "ota"),
        slot,
        plate_format=lambda: 96,
    )
    signed = sign_release(release_dir(tmp_path / "r"), KEY, version="3.2.0")
    cand = Candidate.of(notice_for(signed, **notice))
    cand.directory = str(tmp_path / "ota" / "models" / "candidate")
    Path(cand.directory).mkdir(parents=True)
    classifier = _Classifier()
    svc.state.candidate, svc._classifier = cand, classifier
    return svc, slot, classifier


def test_a_needs_review_rate_that_jumps_rolls_back_at_once(tmp_path: Path, key_file: Path) -> None:
    svc, slot, classifier = _shadowing(tmp_path, key_file, shadow_plates=20, threshold=0.5)
    same = ["flowing", "agglutinated"]
    svc.shadow_read(lambda c: _plate(same, needs_review=True), _plate(same), 10.0)
    assert svc.state.candidate is None and classifier.closed and slot.promoted == []
    last = svc.state.reports[-1]
    assert last["state"] == "rolled_back" and last["shadow_plates"] == 1
    assert "needs_review rate 1.00 against 0.00" in last["reason"]
    assert last["agreement"] == 1.0 and last["needs_review_rate"] == 1.0
    assert not (tmp_path / "ota" / "models" / "candidate").exists()


def test_the_admins_confirmation_switches_whatever_the_agreement(
    tmp_path: Path, key_file: Path
) -> None:
    svc, slot, classifier = _shadowing(tmp_path, key_file, shadow_plates=2, confirmed=True)
    for _ in range(2):
        svc.shadow_read(lambda c: _plate(["invalid"] * 4), _plate(["flowing"] * 4), 5.0)
    assert slot.promoted == [classifier] and not classifier.closed
    assert svc.state.reports[-1]["state"] == "switched"
    assert svc.state.reports[-1]["agreement"] == 0.0
    assert OtaState(tmp_path / "ota").active_dir() == tmp_path / "ota" / "models" / "candidate"


def test_below_the_threshold_after_the_shadow_plates_rolls_back(
    tmp_path: Path, key_file: Path
) -> None:
    svc, slot, classifier = _shadowing(tmp_path, key_file, shadow_plates=2, threshold=0.9)
    svc.shadow_read(lambda c: _plate(["flowing"] * 10), _plate(["flowing"] * 10), 5.0)
    assert svc.state.candidate is not None  # one plate of two: keep shadowing
    svc.shadow_read(
        lambda c: _plate(["flowing"] * 6 + ["invalid"] * 4), _plate(["flowing"] * 10), 5.0
    )
    assert [r["state"] for r in svc.state.reports] == ["shadowing", "rolled_back"]
    assert "agreement 0.800 below 0.900 after 2 plates" in svc.state.reports[-1]["reason"]
    assert slot.promoted == [] and classifier.closed


def test_a_candidate_that_raises_on_a_plate_is_rolled_back(tmp_path: Path, key_file: Path) -> None:
    svc, slot, classifier = _shadowing(tmp_path, key_file)

    def broken(c: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access")

    svc.shadow_read(broken, _plate(["flowing"]), 5.0)
    assert svc.state.reports[-1]["state"] == "rolled_back"
    assert "illegal memory access" in svc.state.reports[-1]["reason"]
    assert classifier.closed and svc.state.candidate is None and slot.promoted == []


def test_a_release_that_would_eat_the_disk_floor_is_refused_before_any_download(
    make_settings: SettingsFactory,
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
    key_file: Path,
) -> None:
    import shutil as sh

    free_mb = sh.disk_usage(tmp_path).free // 2**20
    settings = make_settings(
        detector={"type": "fake", "wells_model_dir": str(SHIPPED_WELLS_DIR)},
        ota={"public_key_file": str(key_file)},
        retention={"disk_floor_mb": free_mb + 1},
    )
    app = start_app(settings)
    deliver(app, offer(server, tmp_path, "2.11.0"))
    wait_for(lambda: "refused" in server.states(), "the refusal report")
    assert server.reports[0]["reason"].startswith("disk:")
    assert server.served == ["manifest.signed.json"]  # no model byte was fetched
    assert version_in_force(app) == SHIPPED_VERSION
    staging = settings.data_dir / "ota" / "staging"
    assert not any(p.suffix == ".onnx" for p in staging.rglob("*"))


# --- hostile probes ----------------------------------------------------------------------
# A manifest served with odd key names, the disk filling up during a download, a file served
# larger than signed, a state file of the wrong shape, a stored report that does not parse.


def _staged_files(data_dir: Path) -> list[Path]:
    ota = data_dir / "ota"
    return [p for d in ("staging", "models") for p in (ota / d).rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "key", ["bad\x00key", "\x1b[31mred", "k" * 2000], ids=["nul", "escape", "long"]
)
def test_a_malformed_manifest_with_odd_key_names_is_refused_and_reported(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
    key: str,
) -> None:
    # Failed before the fix: the refusal's reason quoted the key raw, the report did not
    # validate (control character / over 500 characters), so no report was ever sent and the
    # service stayed "downloading".
    settings = ota_settings()
    app = start_app(settings)
    notice = offer(server, tmp_path, "4.1.0")
    assert server.folder is not None
    path = server.folder / "manifest.signed.json"
    doc = json.loads(path.read_bytes())
    doc["manifest"]["metrics"][key] = 1.0  # not signed, not even parsed: served as is
    path.write_text(json.dumps(doc))
    deliver(app, notice)
    wait_for(lambda: "refused" in server.states(), "the refusal report")
    reason = server.reports[0]["reason"]
    assert reason.startswith("malformed:"), reason
    assert len(reason) <= 500 and reason.isprintable(), ascii(reason)
    assert app.ota.status()["step"] == "idle"
    assert _staged_files(settings.data_dir) == []
    assert version_in_force(app) == SHIPPED_VERSION


class _DiskFills(ModelApi):
    """The real client, but the disk fills after `room` bytes of model files."""

    room = 4096

    def download(self, url: str, dest: Path, *, limit: int) -> int:
        if dest.suffix != ".onnx":
            return super().download(url, dest, limit=limit)
        with dest.open("ab") as fh:
            fh.write(b"\0" * self.room)
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))


def test_the_disk_filling_up_during_a_download_is_refused_and_the_partial_file_deleted(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    # Failed before the fix: the OSError escaped the OTA thread's round (logged only), no
    # report went to the cloud and the partial file stayed in staging, eating the disk.
    settings = ota_settings()
    app = start_app(settings, _DiskFills)
    deliver(app, offer(server, tmp_path, "4.2.0"))
    wait_for(lambda: "refused" in server.states(), "the refusal report")
    assert server.states() == ["refused"]
    assert server.reports[0]["reason"].startswith("disk:"), server.reports[0]
    assert _staged_files(settings.data_dir) == []
    assert app.ota.status()["step"] == "idle"
    assert app.runs.get_run(submit(app)).model.get("version") == SHIPPED_VERSION


class _Sizes(ModelApi):
    """The real client, recording the size of each file once a download returned."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.sizes: dict[str, tuple[int, int]] = {}

    def download(self, url: str, dest: Path, *, limit: int) -> int:
        size = super().download(url, dest, limit=limit)
        self.sizes[dest.name] = (dest.stat().st_size, limit)
        return size


def test_a_file_served_larger_than_signed_stops_at_its_size_and_is_refused(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    # Held before this test (it fills a gap: only a cut, never a longer file, was tried).
    settings = ota_settings(download_attempts=1)
    client = _Sizes(server.url, server.token, timeout_s=10)
    app = start_app(settings, client)
    notice = offer(server, tmp_path, "4.3.0")
    assert server.folder is not None
    with (server.folder / "tilted.onnx").open("ab") as fh:
        fh.write(b"\xee" * (8 * 2**20))  # 8 MB more than the manifest's size
    deliver(app, notice)
    wait_for(lambda: "refused" in server.states(), "the refusal report")
    assert server.reports[0]["reason"].startswith("tampered:"), server.reports[0]
    got, limit = client.sizes["tilted.onnx"]
    assert got == limit + 1  # one byte over is enough to refuse; the rest never written
    assert _staged_files(settings.data_dir) == []


@pytest.mark.parametrize(
    "doc",
    [
        {"active": "hi-wells"},
        {"active": ["x"]},
        {"active": {"name": "hi-wells", "version": "9.9.9", "directory": 5}},
        {"candidate": {"notice": {"kind": "model"}}},
        {"ended": ["x"]},
        ["not", "an", "object"],
    ],
    ids=["active-str", "active-list", "directory-int", "candidate", "ended", "list"],
)
def test_a_state_file_of_the_wrong_shape_does_not_stop_the_appliance(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    doc: Any,
) -> None:
    # Failed before the fix for the three `active` cases: OtaState.active_dir() raised
    # (AttributeError/TypeError) while the appliance was being built, so it never started.
    settings = ota_settings()
    ota = settings.data_dir / "ota"
    ota.mkdir(parents=True)
    (ota / "state.json").write_text(json.dumps(doc))
    app = start_app(settings)
    assert version_in_force(app) == SHIPPED_VERSION
    status = app.ota.status()
    assert status["active"] is None and status["shadow"] is None
    assert app.runs.get_run(submit(app)).model.get("version") == SHIPPED_VERSION


def test_a_stored_report_that_does_not_parse_is_dropped_and_the_good_ones_go(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
) -> None:
    # Failed before the fix: ModelReport.model_validate raised on the first stored report in
    # every round (not a CloudError), so it and every report behind it waited for ever.
    settings = ota_settings()
    good = ModelReport(
        assignment_id=uuid.uuid4(),
        version="4.4.0",
        state="refused",
        reason="disk: full",
        at=datetime.now(timezone.utc),
    )
    bad = {"state": "switched", "version": "../../x"}
    ota = settings.data_dir / "ota"
    ota.mkdir(parents=True)
    (ota / "state.json").write_text(
        json.dumps({"reports": [bad, "junk", json.loads(good.model_dump_json())]})
    )
    app = start_app(settings)
    wait_for(lambda: server.reports != [], "the good report delivered")
    assert server.states() == ["refused"]
    assert server.reports[0]["version"] == "4.4.0"
    wait_for(lambda: app.ota.status()["reports_pending"] == 0, "nothing left pending")


def test_a_state_file_naming_a_folder_elsewhere_never_deletes_it(
    ota_settings: Callable[..., Any],
    start_app: Callable[..., Appliance],
    server: ModelServer,
    tmp_path: Path,
) -> None:
    # Failed before the fix: a candidate that no longer verifies after a restart had its
    # folder deleted with shutil.rmtree wherever the state file said it was.
    settings = ota_settings()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("not a model")
    signed = sign_release(release_dir(tmp_path / "r"), KEY, version="4.5.0")
    notice = notice_for(signed)
    ota = settings.data_dir / "ota"
    ota.mkdir(parents=True)
    candidate = {"notice": json.loads(notice.model_dump_json()), "directory": str(precious)}
    (ota / "state.json").write_text(json.dumps({"candidate": candidate}))
    app = start_app(settings)
    wait_for(lambda: "failed" in server.states(), "the failure report")
    assert server.reports[0]["reason"].startswith("after a restart:")
    assert (precious / "keep.txt").read_text() == "not a model"
    assert app.ota.status()["shadow"] is None
    assert version_in_force(app) == SHIPPED_VERSION
