"""Images out of band: presign from the real cloud API (device token), PUT to a real S3 server.

Uses the cloud's SeaweedFS fixture and the cloud app (uvicorn on a free port).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.cloud.conftest import S3Server, make_settings, s3_server  # noqa: F401 (fixture)
from tests.sync.conftest import cloud_database
from tests.sync.harness import free_port, serve_asgi
from tests.sync.world import accounts

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


@dataclass
class Cloud:
    base_url: str
    token: str
    site: str
    device: str
    s3: S3Server
    db_url: str


@pytest.fixture
def cloud(s3_server: S3Server, tmp_path: Path) -> Iterator[Cloud]:  # noqa: F811
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from cloud.app import create_app
    from cloud.crud.devices import provision_device
    from cloud.models import Site

    devices = accounts(1, 1)
    with cloud_database(devices) as url:
        engine = create_engine(url)
        with Session(engine) as session, session.begin():
            site = session.scalar(select(Site).where(Site.slug == devices[0].site))
            assert site is not None
            token = provision_device(session, site=site, slug="uploader").api_token
        engine.dispose()
        settings = make_settings(url, tmp_path, s3_server)
        with serve_asgi(create_app(settings, listen=False)) as api:
            yield Cloud(api, token, devices[0].site, "uploader", s3_server, url)


def s3_object(s3: S3Server, key: str) -> bytes:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    return bytes(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())


def test_images_are_uploaded_with_checksums_and_referenced(cloud: Cloud, tmp_path: Path) -> None:
    from edge.config import SyncSettings
    from edge.sync.uploader import ImageUploader

    annotated = tmp_path / "annotated.jpg"
    annotated.write_bytes(b"\xff\xd8" + bytes(range(256)) * 50 + b"\xff\xd9")
    thumb = tmp_path / "thumbnail.jpg"
    thumb.write_bytes(b"\xff\xd8thumb\xff\xd9")
    settings = SyncSettings(api_base_url=cloud.base_url, device_token=cloud.token)
    uploader = ImageUploader(
        settings, image_paths=lambda run_id: {"annotated": annotated, "thumbnail": thumb}
    )
    run_id = str(uuid.uuid4())
    uploader.start()
    try:
        created = datetime.now(timezone.utc)
        refs = uploader.refs_for(run_id, created)
        assert refs is None  # queued, uploading on its own thread
        deadline = time.monotonic() + 30
        while refs is None and time.monotonic() < deadline:
            time.sleep(0.1)
            refs = uploader.refs_for(run_id, created)
    finally:
        uploader.stop()
    assert refs is not None
    by_role = {r["role"]: r for r in refs}
    assert set(by_role) == {"annotated", "thumbnail"}
    for role, path in (("annotated", annotated), ("thumbnail", thumb)):
        ref = by_role[role]
        assert ref["key"] == f"{cloud.site}/{cloud.device}/{run_id}/{role}.jpg"
        assert ref["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert ref["size_bytes"] == path.stat().st_size
        assert s3_object(cloud.s3, ref["key"]) == path.read_bytes()
    # The refs validate as a run message's images.
    from core.wire import ImageRef

    assert [ImageRef(**r) for r in refs]


def test_a_wrong_token_is_a_permanent_failure(cloud: Cloud, tmp_path: Path) -> None:
    from edge.config import SyncSettings
    from edge.sync.uploader import ImageUploader, UploadError

    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8x\xff\xd9")
    settings = SyncSettings(
        api_base_url=cloud.base_url, device_token="mpd_not-a-token", upload_retries=1
    )
    uploader = ImageUploader(
        settings, image_paths=lambda run_id: {"annotated": image}, sleep=lambda s: None
    )
    with pytest.raises(UploadError) as err:
        uploader.upload_one(str(uuid.uuid4()), "annotated", image)
    assert err.value.permanent
    assert "401" in str(err.value)


def test_an_unreachable_api_is_retried_then_reported(tmp_path: Path) -> None:
    from edge.config import SyncSettings
    from edge.sync.uploader import ImageUploader, UploadError

    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    sleeps: list[float] = []
    settings = SyncSettings(
        api_base_url=f"http://127.0.0.1:{free_port()}", device_token="t", upload_retries=3
    )
    uploader = ImageUploader(settings, image_paths=lambda run_id: {}, sleep=sleeps.append)
    with pytest.raises(UploadError) as err:
        uploader.upload_one(str(uuid.uuid4()), "annotated", image)
    assert not err.value.permanent
    assert len(sleeps) == 3 and sleeps == sorted(sleeps)
