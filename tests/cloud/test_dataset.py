"""`dataset export` on real Postgres and SeaweedFS: only reviewed plates of opted-in sites, raw
photos byte for byte, YOLO labels a training step reads (models.finetune), a manifest."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cloud.cli import build_parser
from cloud.crud import results
from cloud.dataset import run_dataset
from cloud.models import Device
from cloud.storage import ObjectStore, image_key
from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from core.review import review_edit
from core.titre import DilutionSettings, row_results
from core.wells import WellCall
from core.wire import ImageRef, RunMessage, build_run_message
from models.finetune import load_field_dataset
from models.synth.render2 import render_plate_v2
from models.wells.dataset import CLASS_ID
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.world import World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

AT = datetime.now(timezone.utc).replace(microsecond=0)
WRONG = {"A1": "invalid", "B2": "invalid", "C3": "invalid"}  # the model's mistakes


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("dataset"), s3_server, login_rate_per_minute=500
    )
    with open_client(settings) as client:
        w = build_world(settings, client)
        resp = client.patch(
            f"/api/v1/sites/{w.site_a}",
            json={"allow_training": True},
            headers=w.actors["admin"].headers,
        )
        assert resp.status_code == 200
        yield w


def _plate_run(
    world: World, site: str, index: int, *, raw: bool = True
) -> tuple[RunMessage, bytes]:
    """A read of generator plate `index` as the appliance would send it: boxes from the grid,
    the model wrong on three wells; its raw photo uploaded to object storage."""
    sample = render_plate_v2(55, index, mode="tilted")
    grid = CalibrationGrid.from_legacy(sample.calibration).scaled(sample.width, sample.height)
    run_id = uuid.uuid4()
    calls = {}
    for w in sample.wells:
        state = WRONG.get(w["well_id"], w["state"])
        calls[w["well_id"]] = WellCall(
            well_id=w["well_id"],
            row=w["row"],
            col=w["col"],
            state=state,
            confidence=0.9,
            box=grid.cell_box(w["row"], w["col"]),
        )
    images = ()
    if raw:
        key = image_key(site=site, device="reader-1", run_id=str(run_id), kind="raw")
        ObjectStore(world.settings).put(key, sample.jpeg)
        images = (ImageRef(role="raw", key=key, sha256=hashlib.sha256(sample.jpeg).hexdigest()),)
    msg = build_run_message(
        calls=calls,
        rows=row_results(calls, PLATE_96, dilution=DilutionSettings()),
        run_id=run_id,
        plate_id=uuid.uuid4(),
        device_id="reader-1",
        site_id=site,
        sample_number=f"D-{index}",
        captured_at=AT,
        processed_at=AT,
        model={"name": "hi-wells", "version": "2.1.0", "sha256": "b" * 64},
        calibration_id="grid-1",
        plate_format=96,
        dilution=DilutionSettings(),
        reading="tilted",
        images=images,
    )
    return msg, sample.jpeg


def _store(world: World, msg: RunMessage, device_id: uuid.UUID) -> None:
    with world.sessions()() as session:
        device = session.get(Device, device_id)
        assert device is not None
        results.upsert_run(session, msg, device=device)
        session.commit()


def _export(world: World, out: Path, since: str) -> int:
    args = build_parser().parse_args(["dataset", "export", "--since", since, "--out", str(out)])
    return run_dataset(world.settings, args)


def test_export_gives_labels_a_training_step_reads(world: World, tmp_path: Path) -> None:
    truth = {w["well_id"]: w["state"] for w in render_plate_v2(55, 0, mode="tilted").wells}
    reviewed, jpeg = _plate_run(world, world.slug_a, 0)
    _store(world, reviewed, world.device_a)
    fix = {well: truth[well] for well in WRONG}
    _store(world, review_edit(reviewed, fix, by="ana", at=AT), world.device_a)
    unreviewed, _ = _plate_run(world, world.slug_a, 1)
    _store(world, unreviewed, world.device_a)
    no_photo, _ = _plate_run(world, world.slug_a, 2, raw=False)
    _store(world, no_photo, world.device_a)
    _store(world, review_edit(no_photo, {}, by="ana", at=AT), world.device_a)
    other_site, _ = _plate_run(world, world.slug_b, 3)
    _store(world, other_site, world.device_b)
    _store(world, review_edit(other_site, {"A1": "flowing"}, by="bo", at=AT), world.device_b)

    out = tmp_path / "export"
    since = (AT - timedelta(days=1)).date().isoformat()
    assert _export(world, out, since) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["run_id"] for p in manifest["plates"]] == [str(reviewed.run_id)]
    assert manifest["skipped"] == [
        {"run_id": str(no_photo.run_id), "reason": "no raw photo uploaded"}
    ]
    plate = manifest["plates"][0]
    assert plate["site"] == world.slug_a and plate["device"] == "reader-1"
    assert plate["model"]["version"] == "2.1.0" and plate["reviewed_by"] == "ana"
    assert sorted(c["well"] for c in plate["corrected_wells"]) == sorted(WRONG)
    assert all(c["model"] == "invalid" for c in plate["corrected_wells"])
    assert (out / plate["image"]).read_bytes() == jpeg
    assert (
        "names:\n  0: flowing\n  1: agglutinated\n  2: invalid\n" in (out / "data.yaml").read_text()
    )

    # A training step reads the labels: models.finetune cuts the labelled wells and labels
    # them with the operator's final calls, in plate order.
    plates = load_field_dataset(out)
    assert len(plates) == 1 and plates[0].site == world.slug_a and plates[0].mode == "tilted"
    assert plates[0].crops.y.tolist() == [CLASS_ID[truth[w]] for w in PLATE_96.well_ids()]
    assert plates[0].crops.x.shape == (96, 3, 32, 32)


def test_export_refuses_a_used_directory_and_a_bad_date(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert _export(world, tmp_path, "2026-01-01") == 2
    assert "not empty" in capsys.readouterr().err
    assert _export(world, tmp_path / "new", "yesterday") == 2
    assert "not a date" in capsys.readouterr().err
    # a file, not a directory: a clear error (was a NotADirectoryError traceback)
    assert _export(world, tmp_path / "keep.txt", "2026-01-01") == 2
    assert "not a directory" in capsys.readouterr().err


def test_raw_photos_are_collected_only_where_training_is_allowed(world: World) -> None:
    body = {"run_id": str(uuid.uuid4()), "kind": "raw", "size_bytes": 1000}
    allowed = world.client.post(
        "/api/v1/device/images/presign",
        json=body,
        headers={"Authorization": f"Bearer {world.device_token_a}"},
    )
    assert allowed.status_code == 200, allowed.text
    refused = world.client.post(
        "/api/v1/device/images/presign",
        json=body,
        headers={"Authorization": f"Bearer {world.device_token_b}"},
    )
    assert refused.status_code == 403 and "raw photos" in refused.json()["detail"]


def test_a_raw_photo_key_outside_the_devices_prefix_is_not_exported(
    world: World, tmp_path: Path
) -> None:
    # Failed before the fix: the export fetched whatever key the device's message named, so a
    # device at an opted-in site could pull another site's raw photo (a site that never allowed
    # training) into the training set by naming its key.
    theirs, their_jpeg = _plate_run(world, world.slug_b, 7)
    _store(world, theirs, world.device_b)
    their_key = theirs.images[0].key
    ours, _ = _plate_run(world, world.slug_a, 8, raw=False)
    ours = ours.model_copy(update={"images": (ImageRef(role="raw", key=their_key),)})
    _store(world, ours, world.device_a)
    _store(world, review_edit(ours, {"A1": "flowing"}, by="mallory", at=AT), world.device_a)

    out = tmp_path / "export"
    assert _export(world, out, (AT - timedelta(days=1)).date().isoformat()) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert str(ours.run_id) not in [p["run_id"] for p in manifest["plates"]]
    skipped = {s["run_id"]: s["reason"] for s in manifest["skipped"]}
    # The ingest stores only the key it builds from the device itself (cloud.storage.
    # run_image_keys), and the export fetches only that key: our own raw photo was never
    # uploaded, so the run is left out.
    assert skipped[str(ours.run_id)] in ("raw photo missing in storage", "not this device's"), (
        skipped
    )
    hashes = {hashlib.sha256(p.read_bytes()).digest() for p in (out / "images").iterdir()}
    assert hashlib.sha256(their_jpeg).digest() not in hashes
