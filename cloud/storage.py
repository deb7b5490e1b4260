"""Object storage through the S3 API (MinIO in deployment, SeaweedFS in tests)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)

IMAGE_KINDS = ("raw", "annotated", "thumbnail")
_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$")


class StorageError(RuntimeError):
    """Object storage is unreachable or refused the request."""


def image_key(*, site: str, device: str, run_id: str, kind: str) -> str:
    """`{site}/{device}/{run_id}/{kind}.jpg`; every part is checked so no key escapes its prefix."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {kind!r}")
    for part in (site, device):
        if not _SEGMENT.match(part):
            raise ValueError(f"unsafe key segment {part!r}")
    if not re.fullmatch(r"[0-9a-f-]{36}", run_id):
        raise ValueError("run id must be a UUID")
    return f"{site}/{device}/{run_id}/{kind}.jpg"


def run_image_keys(*, site: str, device: str, run_id: str, roles: Iterable[str]) -> dict[str, str]:
    """The object keys of a run's images, by role, built from the sending device's own identity.

    A run message names its images by role and also carries keys; those keys are the device's
    word and are not stored: a device could name another site's object (its raw photo, say)
    and have it listed or exported as its own. The presign route only ever signs these keys."""
    return {role: image_key(site=site, device=device, run_id=run_id, kind=role) for role in roles}


class ObjectStore:
    def __init__(self, settings: CloudSettings) -> None:
        if settings.s3_access_key is None or settings.s3_secret_key is None:
            raise StorageError("s3_access_key and s3_secret_key must be set")
        self.bucket = settings.s3_bucket
        self.expires = settings.presign_seconds
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key.get_secret_value(),
            aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 2},
            ),
        )

    def ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            logger.info("creating bucket %s", self.bucket)
            self._client.create_bucket(Bucket=self.bucket)

    def ping(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError):
            return False
        return True

    def presign_get(self, key: str) -> str:
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expires
        )
        return url

    def presign_put(
        self, key: str, *, content_type: str = "image/jpeg", size_bytes: int | None = None
    ) -> str:
        """A presigned PUT; the content type and, when given, the exact length are signed,
        so the store refuses a body of another type or size."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentType": content_type}
        if size_bytes is not None:
            params["ContentLength"] = size_bytes
        url: str = self._client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=self.expires
        )
        return url

    def put(self, key: str, data: bytes, *, content_type: str = "image/jpeg") -> None:
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        """The object's bytes (ClientError when it is missing)."""
        body: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True
