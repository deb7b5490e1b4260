"""The model registry end to end on real servers: publish (SeaweedFS + Postgres), assign with a
canary, notices over a real Mosquitto with the generated ACL, presigned downloads verified
with the device's public key, shadow/switch/rollback reports, and refusals."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from cloud.cli import build_parser
from cloud.crud import devices, sites
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.models import ModelRelease
from cloud.mqtt_auth import BrokerAccount, render_acl_file
from cloud.ota_cli import run_models
from core.ota import ArtefactError, load_public_key, parse_signed, verify_artefact
from core.rollout import parse_notice
from core.topics import Topics
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.world import World, build_world, open_client
from tests.sync.harness import Mosquitto, free_port, world_dir
from tests.sync.mqttc import MqttProbe

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[2]
INGEST = "microplate-ingest"
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex


@dataclass
class Fleet:
    world: World
    broker: Mosquitto
    passwords: dict[str, str]  # device slug at site A -> broker password
    tokens: dict[str, str]  # device slug at site A -> API token
    key: Path
    public_key: str


def _gate(accepted: bool) -> dict[str, Any]:
    return {
        "accepted": accepted,
        "baseline_version": "2.1.0",
        "checks": [
            {
                "name": "field.plate_split.wells_right",
                "candidate": 0.95 if accepted else 0.80,
                "baseline": 0.93,
                "passed": accepted,
            }
        ],
    }


def _release_dir(tmp: Path, *, accepted: bool = True) -> Path:
    out = tmp / f"release-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    for name in ("tilted.onnx", "untilted.onnx"):
        shutil.copy(REPO / "models" / "hi-wells" / name, out / name)
    doc = {"metrics": {"validation_accuracy": {"tilted": 0.98}}, "gate": _gate(accepted)}
    (out / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    return out


def _cli(fleet_settings: Any, *argv: str) -> int:
    args = build_parser().parse_args(["models", *argv])
    return run_models(fleet_settings, args)


@pytest.fixture(scope="module")
def fleet(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("ota")
    ingest_password = "ingest-" + uuid.uuid4().hex
    port = free_port()
    settings = make_settings(
        migrated_db,
        tmp,
        s3_server,
        login_rate_per_minute=500,
        mqtt_broker_url=f"mqtt://127.0.0.1:{port}",
        mqtt_ingest_password=ingest_password,
        metrics_token=METRICS_TOKEN,
    )
    with open_client(settings) as client:
        world = build_world(settings, client)
        engine = make_engine(settings)
        passwords: dict[str, str] = {}
        tokens: dict[str, str] = {}
        try:
            with session_scope(make_sessionmaker(engine)) as session:
                site = sites.get_site_by_slug(session, slug=world.slug_a)
                assert site is not None
                for slug in ("canary-1", "reader-2", "reader-3"):
                    e = devices.provision_device(session, site=site, slug=slug)
                    passwords[slug] = e.mqtt_password
                    tokens[slug] = e.api_token
        finally:
            engine.dispose()
        accounts = {INGEST: ingest_password}
        accounts.update({f"{world.slug_a}.{s}": p for s, p in passwords.items()})
        acl = render_acl_file(
            [BrokerAccount(f"{world.slug_a}.{s}", "", world.slug_a, s) for s in passwords],
            ingest_username=INGEST,
        )
        broker = Mosquitto(world_dir("mp-ota-mqtt-"), accounts=accounts, acl=acl, port=port)
        broker.start()
        key = tmp / "signing.pem"
        assert _cli(settings, "keygen", "--out", str(key)) == 0
        from core.ota import load_private_key, public_key_text

        public = public_key_text(load_private_key(key.read_bytes()))
        try:
            yield Fleet(world, broker, passwords, tokens, key, public)
        finally:
            broker.kill()
            shutil.rmtree(broker.workdir, ignore_errors=True)


def _probe(fleet: Fleet, slug: str) -> MqttProbe:
    probe = MqttProbe(
        fleet.broker.port,
        f"{fleet.world.slug_a}.{slug}",
        fleet.passwords[slug],
        client_id=f"{fleet.world.slug_a}.{slug}",
    )
    probe.connect()
    probe.subscribe(Topics(fleet.world.slug_a, slug).model)
    return probe


def _admin(fleet: Fleet) -> dict[str, str]:
    return fleet.world.actors["admin"].headers


def _device(fleet: Fleet, slug: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {fleet.tokens[slug]}"}


def _publish(fleet: Fleet, tmp_path: Path, version: str, **kw: Any) -> int:
    return _cli(
        fleet.world.settings,
        "publish",
        "--key",
        str(fleet.key),
        "--dir",
        str(_release_dir(tmp_path, **kw)),
        "--version",
        version,
    )


def _assign(fleet: Fleet, version: str, *, canary: str = "canary-1", **kw: Any) -> dict[str, Any]:
    body = {
        "name": "hi-wells",
        "version": version,
        "site_id": str(fleet.world.site_a),
        "devices": ["canary-1", "reader-2", "reader-3"],
        "canary": canary,
        "shadow_plates": 5,
        "agreement_threshold": 0.95,
        **kw,
    }
    resp = fleet.world.client.post("/api/v1/models/assignments", json=body, headers=_admin(fleet))
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


def _download(fleet: Fleet, slug: str, into: Path) -> bytes:
    resp = fleet.world.client.get("/api/v1/device/model", headers=_device(fleet, slug))
    assert resp.status_code == 200, resp.text
    offer = resp.json()
    into.mkdir(parents=True, exist_ok=True)
    for f in offer["files"]:
        (into / f["path"]).write_bytes(httpx.get(f["url"], timeout=10).raise_for_status().content)
    return httpx.get(offer["manifest_url"], timeout=10).raise_for_status().content


def _report(fleet: Fleet, slug: str, assignment: str, state: str, **kw: Any) -> httpx.Response:
    body = {
        "assignment_id": assignment,
        "version": kw.pop("version", "2.2.0"),
        "state": state,
        "at": datetime.now(timezone.utc).isoformat(),
        **kw,
    }
    return fleet.world.client.post(
        "/api/v1/device/model/report", json=body, headers=_device(fleet, slug)
    )


def _notices(probe: MqttProbe, wait: float = 1.5) -> list[Any]:
    return [parse_notice(payload) for _, payload in probe.drain(wait)]


def test_publish_uploads_signed_files_and_refuses_what_it_must(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _publish(fleet, tmp_path, "2.2.0") == 0
    out = capsys.readouterr()
    assert "PRIVATE" not in out.out + out.err
    with fleet.world.sessions()() as session:
        release = session.query(ModelRelease).filter_by(version="2.2.0").one()
        assert "PRIVATE" not in json.dumps(release.signed_manifest)
    s3 = fleet.world.settings
    client = boto3.client(
        "s3",
        endpoint_url=s3.s3_endpoint_url,
        aws_access_key_id=s3.s3_access_key.get_secret_value(),
        aws_secret_access_key=s3.s3_secret_key.get_secret_value(),
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    keys = {
        o["Key"]
        for o in client.list_objects_v2(Bucket=s3.s3_bucket, Prefix="_models/hi-wells/2.2.0/")[
            "Contents"
        ]
    }
    assert keys == {
        "_models/hi-wells/2.2.0/manifest.signed.json",
        "_models/hi-wells/2.2.0/tilted.onnx",
        "_models/hi-wells/2.2.0/untilted.onnx",
    }
    # The same version twice, a release its gate rejected, a key others can read: refused.
    assert _publish(fleet, tmp_path, "2.2.0") == 2
    assert _publish(fleet, tmp_path, "2.3.0", accepted=False) == 2
    assert "gate rejected" in capsys.readouterr().err
    fleet.key.chmod(0o644)
    try:
        assert _publish(fleet, tmp_path, "2.4.0") == 2
        assert "readable by others" in capsys.readouterr().err
    finally:
        fleet.key.chmod(0o600)
    listed = fleet.world.client.get("/api/v1/models", headers=_admin(fleet)).json()
    assert [(r["version"], r["gate_accepted"]) for r in listed] == [("2.2.0", True)]
    manager = fleet.world.actors["manager"].headers
    assert fleet.world.client.get("/api/v1/models", headers=manager).status_code == 403


def test_canary_first_then_everyone_then_a_rollback(fleet: Fleet, tmp_path: Path) -> None:
    if fleet.world.client.get("/api/v1/models", headers=_admin(fleet)).json() == []:
        assert _publish(fleet, tmp_path, "2.2.0") == 0
    canary, other = _probe(fleet, "canary-1"), _probe(fleet, "reader-2")
    try:
        # The ACL: a device reads no other device's notices and forges none, even its own.
        other.subscribe(Topics(fleet.world.slug_a, "canary-1").model)
        for topic in (Topics(fleet.world.slug_a, s).model for s in ("reader-2", "canary-1")):
            assert other.publish(topic, b'{"forged": true}', retain=True).value == 135
        assignment = _assign(fleet, "2.2.0")["id"]
        got = _notices(canary)
        assert [(n.version, n.canary, str(n.assignment_id)) for n in got] == [
            ("2.2.0", True, assignment)
        ]
        assert _notices(other, 0.5) == []
        assert (
            fleet.world.client.get("/api/v1/device/model", headers=_device(fleet, "reader-2"))
        ).status_code == 404

        # The canary downloads by presigned URL and verifies with the Ansible public key.
        manifest = _download(fleet, "canary-1", tmp_path / "canary")
        verified = verify_artefact(
            manifest,
            tmp_path / "canary",
            public_key=load_public_key(fleet.public_key),
            plate_format=96,
        )
        assert verified.version == "2.2.0" and verified.gate is not None
        assert parse_signed(manifest).sha256 == got[0].manifest_sha256

        r = _report(fleet, "canary-1", assignment, "shadowing", shadow_plates=3, agreement=0.97,
                    current_ms=40.0, candidate_ms=42.5)  # fmt: skip
        assert r.json() == {"state": "shadowing", "stage": "canary"}
        assert _notices(other, 0.5) == []
        r = _report(fleet, "canary-1", assignment, "switched", shadow_plates=5, agreement=0.98)
        assert r.json() == {"state": "switched", "stage": "rolling"}

        # The others hear of it only now, as non-canaries.
        assert [(n.version, n.canary) for n in _notices(other)] == [("2.2.0", False)]
        r = _report(fleet, "reader-2", assignment, "rolled_back", reason="needs_review rate jumped",
                    needs_review_rate=0.4)  # fmt: skip
        assert r.json()["state"] == "rolled_back"
        # A late report cannot revive a rolled-back device.
        assert _report(fleet, "reader-2", assignment, "switched").json()["state"] == "rolled_back"

        rows = fleet.world.client.get(
            "/api/v1/models/rollouts", headers=fleet.world.actors["manager"].headers
        ).json()
        states = {
            (r["device_slug"], r["state"], r["canary"])
            for r in rows
            if r["assignment_id"] == assignment
        }
        assert states == {
            ("canary-1", "switched", True),
            ("reader-2", "rolled_back", False),
            ("reader-3", "notified", False),
        }
        metrics = fleet.world.client.get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        ).text
        labels = f'model="hi-wells 2.2.0",site="{fleet.world.slug_a}",stage="rolling"'
        for state in ("switched", "rolled_back", "notified"):
            assert f'microplate_model_rollout_devices{{{labels},state="{state}"}} 1.0' in metrics
        # The other site's manager sees none of it.
        rows_b = fleet.world.client.get(
            "/api/v1/models/rollouts", headers=fleet.world.actors["manager_b"].headers
        ).json()
        assert rows_b == []
        cookie = {"Cookie": f"mp_access={fleet.world.actors['admin'].token}"}
        page = fleet.world.client.get("/ui/models", headers=cookie)
        assert page.status_code == 200, page.text
        assert 'data-device="reader-2" data-state="rolled_back"' in page.text
        assert "needs_review rate jumped" in page.text and "2.2.0" in page.text
        viewer = {"Cookie": f"mp_access={fleet.world.actors['viewer'].token}"}
        assert fleet.world.client.get("/ui/models", headers=viewer).status_code == 403
    finally:
        canary.close()
        other.close()


def test_a_halted_canary_keeps_the_others_on_their_model(fleet: Fleet, tmp_path: Path) -> None:
    assert _publish(fleet, tmp_path, "2.5.0") == 0
    other = _probe(fleet, "reader-3")
    try:
        earlier = other.drain(0.8)  # the retained notice of the earlier assignment, if any
        assignment = _assign(fleet, "2.5.0")["id"]
        later = [payload for _, payload in other.drain(1.5)]
        if earlier:
            # It was told about 2.2.0 and had not switched: that notice is withdrawn (an empty
            # retained message), and its record says so.
            assert later == [b""]
            rows = fleet.world.client.get("/api/v1/models/rollouts", headers=_admin(fleet)).json()
            mine = [r for r in rows if r["device_slug"] == "reader-3" and r["version"] == "2.2.0"]
            assert [r["state"] for r in mine] == ["withdrawn"]
        else:
            assert later == []
        r = _report(fleet, "canary-1", assignment, "refused", version="2.5.0",
                    reason="tampered: tilted.onnx")  # fmt: skip
        assert r.json() == {"state": "refused", "stage": "halted"}
        assert other.drain(0.8) == []
        # A device may not report on an assignment it was never told about, nor another version.
        assert (
            _report(fleet, "reader-3", assignment, "switched", version="2.5.0").status_code == 404
        )
        assert (
            _report(fleet, "canary-1", assignment, "shadowing", version="9.9.9").status_code == 409
        )
        # Promoting a halted assignment is refused.
        resp = fleet.world.client.post(
            f"/api/v1/models/assignments/{assignment}/promote", headers=_admin(fleet)
        )
        assert resp.status_code == 409
    finally:
        other.close()


def test_a_tampered_object_in_storage_is_refused_on_the_device(
    fleet: Fleet, tmp_path: Path
) -> None:
    assert _publish(fleet, tmp_path, "2.6.0") == 0
    assignment = _assign(fleet, "2.6.0")["id"]
    s3 = fleet.world.settings
    client = boto3.client(
        "s3",
        endpoint_url=s3.s3_endpoint_url,
        aws_access_key_id=s3.s3_access_key.get_secret_value(),
        aws_secret_access_key=s3.s3_secret_key.get_secret_value(),
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    key = "_models/hi-wells/2.6.0/untilted.onnx"
    body = bytearray(client.get_object(Bucket=s3.s3_bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=s3.s3_bucket, Key=key, Body=bytes(body))
    manifest = _download(fleet, "canary-1", tmp_path / "dl")
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            manifest, tmp_path / "dl", public_key=load_public_key(fleet.public_key), plate_format=96
        )
    assert err.value.reason == "tampered"
    assert _report(fleet, "canary-1", assignment, "refused", version="2.6.0",
                   reason=str(err.value)).json()["stage"] == "halted"  # fmt: skip


def test_the_acl_keeps_model_notices_to_the_cloud_and_their_device(fleet: Fleet) -> None:
    acl = render_acl_file([BrokerAccount("lab.dev-1", "", "lab", "dev-1")], ingest_username=INGEST)
    assert "topic read microplate/v1/lab/dev-1/model" in acl
    assert "topic write microplate/v1/+/+/model" in acl
    assert "topic write microplate/v1/lab/dev-1/model" not in acl


def test_a_broker_outage_leaves_notices_pending_until_notify(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _publish(fleet, tmp_path, "2.7.0") == 0
    fleet.broker.stop()
    try:
        # The admin's change is recorded even though nobody could be told.
        assignment = _assign(fleet, "2.7.0")["id"]
        rows = fleet.world.client.get("/api/v1/models/rollouts", headers=_admin(fleet)).json()
        canary_row = next(r for r in rows if r["assignment_id"] == assignment and r["canary"])
        assert canary_row["state"] == "waiting"
    finally:
        fleet.broker.start()
    capsys.readouterr()
    assert _cli(fleet.world.settings, "notify") == 0
    assert "1 model notice(s) sent" in capsys.readouterr().out
    canary = _probe(fleet, "canary-1")
    try:
        got = _notices(canary)
        assert [(n.version, str(n.assignment_id)) for n in got] == [("2.7.0", assignment)]
    finally:
        canary.close()
    assert _cli(fleet.world.settings, "notify") == 0  # nothing left: sends nothing
    assert "0 model notice(s) sent" in capsys.readouterr().out


def test_the_models_page_assigns_and_promotes(fleet: Fleet) -> None:
    admin = {
        "Cookie": f"mp_access={fleet.world.actors['admin'].token}",
        "Origin": "http://testserver",
    }
    form = {
        "release": "hi-wells 2.2.0",
        "site_id": str(fleet.world.site_a),
        "canary": "reader-3",
        "devices": "reader-3, reader-2",
        "shadow_plates": "7",
        "agreement_threshold": "0.97",
    }
    resp = fleet.world.client.post(
        "/ui/models/assign", data=form, headers=admin, follow_redirects=False
    )
    assert resp.status_code == 303, resp.text
    newest = fleet.world.client.get("/api/v1/models/assignments", headers=_admin(fleet)).json()[0]
    assert (newest["version"], newest["stage"], newest["shadow_plates"]) == ("2.2.0", "canary", 7)
    resp = fleet.world.client.post(
        f"/ui/models/assignments/{newest['id']}/promote", headers=admin, follow_redirects=False
    )
    assert resp.status_code == 303
    rows = fleet.world.client.get("/api/v1/models/rollouts", headers=_admin(fleet)).json()
    mine = {r["device_slug"]: r["stage"] for r in rows if r["assignment_id"] == newest["id"]}
    assert mine == {"reader-2": "rolling", "reader-3": "rolling"}
    # A canary outside the group is a clear error on the page, not a 500.
    bad = fleet.world.client.post(
        "/ui/models/assign", data={**form, "canary": "canary-1"}, headers=admin
    )
    assert bad.status_code == 409 and "must be one of the assigned devices" in bad.text


def test_hostile_model_reports_are_refused_and_change_nothing(fleet: Fleet, tmp_path: Path) -> None:
    """Another site's device, a device not yet told, another version, and numbers or text at
    the limits (NaN, Infinity, 1e308, NUL, 10 kB, 1 MB): each a clear 4xx, the rollout unmoved."""
    assert _publish(fleet, tmp_path, "2.9.0") == 0
    assignment = _assign(fleet, "2.9.0")["id"]
    client = fleet.world.client
    url = "/api/v1/device/model/report"

    def rollout_state(slug: str) -> str:
        rows = client.get("/api/v1/models/rollouts", headers=_admin(fleet)).json()
        return next(
            r["state"]
            for r in rows
            if r["assignment_id"] == assignment and r["device_slug"] == slug
        )

    before = rollout_state("canary-1")
    site_b = {"Authorization": f"Bearer {fleet.world.device_token_b}"}
    body = {
        "assignment_id": assignment,
        "version": "2.9.0",
        "state": "switched",
        "at": datetime.now(timezone.utc).isoformat(),
    }
    assert client.post(url, json=body, headers=site_b).status_code == 404
    assert _report(fleet, "reader-2", assignment, "switched", version="2.9.0").status_code == 404
    assert _report(fleet, "canary-1", str(uuid.uuid4()), "switched").status_code == 404
    assert _report(fleet, "canary-1", assignment, "switched", version="2.2.0").status_code == 409
    raw = json.dumps(body)[:-1]  # the body without its closing brace, to add one raw field
    for extra in (
        '"agreement": NaN',
        '"current_ms": Infinity',
        '"candidate_ms": -Infinity',
        '"needs_review_rate": 1e308',
        '"current_ms": 1e308',
        '"shadow_plates": 1e308',
        '"shadow_plates": 99999999999999999999999',
        '"reason": "bad\\u0000reason"',
        f'"reason": "{"r" * 10_000}"',
        f'"reason": "{"r" * 2**20}"',
        '"assignment_id": "../../etc"',
    ):
        res = client.post(
            url,
            content=f"{raw}, {extra}}}".encode(),
            headers={**_device(fleet, "canary-1"), "Content-Type": "application/json"},
        )
        assert 400 <= res.status_code < 500, (extra[:40], res.status_code, res.text[:200])
    assert rollout_state("canary-1") == before
    # A reason is the device's text: the models page shows it escaped.
    evil = '<img src=x onerror="alert(1)">'
    r = _report(fleet, "canary-1", assignment, "shadowing", version="2.9.0", reason=evil)
    assert r.status_code == 200, r.text
    cookie = {"Cookie": f"mp_access={fleet.world.actors['admin'].token}"}
    page = client.get("/ui/models", headers=cookie).text
    assert "&lt;img src=x onerror=" in page and evil not in page
