"""Run images out of band: presigned PUT from the cloud's device API, with retries and a checksum.

The sync worker asks `refs_for(run_id, created_at)` before publishing a run: `None` means
"still uploading, try later" (the run waits, other runs go on), a list holds the `ImageRef`s
to put in the run message. Uploads happen on this module's own thread so a slow or absent
API never stalls the outbox drain. The PUT carries `Content-MD5` (the object store rejects a
corrupted body) and the ETag it returns is compared with the MD5 as well. A run whose images
cannot be uploaded within `image_max_wait_s` goes out without them (logged), so results are
never held back for ever by a picture.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from edge.config import SyncSettings

logger = logging.getLogger(__name__)

ImagePaths = Callable[[str], dict[str, Path]]
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class UploadError(Exception):
    """An upload that failed; `permanent` when retrying cannot help (4xx, missing file)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class RawRefused(UploadError):
    """The cloud does not collect this site's raw photos (not opted in for training)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class ImageUploader:
    def __init__(
        self,
        settings: SyncSettings,
        *,
        image_paths: ImagePaths,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        kinds: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        if not settings.api_base_url:
            raise ValueError("sync.api_base_url is needed to upload images")
        self.settings = settings
        self._image_paths = image_paths
        # The image kinds to upload now (the cloud's desired config may add or remove "raw").
        self._kinds = kinds or (lambda: settings.upload_images)
        self._client = client or httpx.Client(timeout=settings.upload_timeout_s)
        self._sleep = sleep
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._done: dict[str, list[dict[str, Any]]] = {}
        self._failed: dict[str, str] = {}
        self._queued: set[str] = set()
        self._thread: threading.Thread | None = None
        # Why the API refused this device's token (401/403), until an upload succeeds again.
        self.refused = ""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sync-images", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10.0)
            self._thread = None

    def refs_for(self, run_id: str, created_at: datetime) -> list[dict[str, Any]] | None:
        with self._lock:
            if run_id in self._done:
                return self._done.pop(run_id)
            if run_id in self._failed:
                age = (datetime.now(timezone.utc) - created_at).total_seconds()
                if age >= self.settings.image_max_wait_s:
                    logger.warning(
                        "run %s goes out without images after %.0f s: %s",
                        run_id,
                        age,
                        self._failed.pop(run_id),
                    )
                    return []
                # Try again later (the API may be back); the worker asks again next round.
                self._failed.pop(run_id)
            if run_id not in self._queued:
                self._queued.add(run_id)
                self._queue.put(run_id)
            return None

    def _loop(self) -> None:
        while True:
            run_id = self._queue.get()
            if run_id is None:
                return
            try:
                refs = self.upload_run(run_id)
            except UploadError as exc:
                with self._lock:
                    self._queued.discard(run_id)
                    if exc.permanent:
                        logger.warning("images of run %s not uploaded: %s", run_id, exc)
                        self._done[run_id] = []
                    else:
                        self._failed[run_id] = str(exc)
                continue
            with self._lock:
                self._queued.discard(run_id)
                self._done[run_id] = refs

    def upload_run(self, run_id: str) -> list[dict[str, Any]]:
        paths = self._image_paths(run_id)
        refs = []
        for kind in self._kinds():
            path = paths.get(kind)
            if path is None or not path.exists():
                continue
            try:
                refs.append(self.upload_one(run_id, kind, path))
            except RawRefused as exc:
                # The other images still go; the device is not marked refused for this.
                logger.warning("raw image of run %s not uploaded: %s", run_id, exc)
        return refs

    def upload_one(self, run_id: str, kind: str, path: Path) -> dict[str, Any]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UploadError(f"{path.name}: {exc.strerror}", permanent=True) from None
        md5 = hashlib.md5(data, usedforsecurity=False)
        sha256 = hashlib.sha256(data).hexdigest()
        attempts = self.settings.upload_retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                self._sleep(min(30.0, 0.5 * 2**attempt))
            try:
                key = self._put(run_id, kind, data, md5)
            except UploadError as exc:
                if exc.permanent:
                    raise
                last = str(exc)
                logger.info("upload %s/%s failed (try %d): %s", run_id, kind, attempt + 1, exc)
                continue
            return {"role": kind, "key": key, "sha256": sha256, "size_bytes": len(data)}
        raise UploadError(f"{kind}: {attempts} attempts failed, last: {last}")

    def token_refused(self) -> bool | None:
        """Does the device API refuse our token (revoked device)? None when it cannot be asked."""
        token = self.settings.api_token()
        if not token:
            return None
        base = (self.settings.api_base_url or "").rstrip("/")
        try:
            resp = self._client.get(
                f"{base}/api/v1/device/me",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5.0,
            )
        except httpx.HTTPError:
            return None
        if resp.status_code in (401, 403):
            return True
        return False if resp.status_code == 200 else None

    def _put(self, run_id: str, kind: str, data: bytes, md5: Any) -> str:
        token = self.settings.api_token()
        if not token:
            raise UploadError("no device token configured", permanent=True)
        base = (self.settings.api_base_url or "").rstrip("/")
        try:
            resp = self._client.post(
                f"{base}/api/v1/device/images/presign",
                json={"run_id": run_id, "kind": kind, "size_bytes": len(data)},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise UploadError(f"presign: {type(exc).__name__}") from None
        if resp.status_code == 403 and kind == "raw" and "raw" in resp.text:
            raise RawRefused(f"presign answered 403: {_detail(resp)}")
        if resp.status_code in (401, 403):
            self.refused = f"presign answered {resp.status_code}"
        if resp.status_code != 200:
            raise UploadError(
                f"presign answered {resp.status_code}",
                permanent=resp.status_code not in _RETRY_STATUS,
            )
        try:
            body = resp.json()
            url, key = str(body["url"]), str(body["key"])
            headers = {str(k): str(v) for k, v in dict(body.get("headers") or {}).items()}
        except (ValueError, KeyError, TypeError):
            raise UploadError("presign answer is not understood") from None
        headers["Content-MD5"] = base64.b64encode(md5.digest()).decode()
        try:
            put = self._client.put(url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise UploadError(f"PUT: {type(exc).__name__}") from None
        if put.status_code not in (200, 201, 204):
            raise UploadError(
                f"PUT answered {put.status_code}", permanent=put.status_code not in _RETRY_STATUS
            )
        self.refused = ""
        etag = put.headers.get("ETag", "").strip('"')
        if etag and "-" not in etag and etag != md5.hexdigest():
            raise UploadError("the stored object's checksum differs from the file")
        return key


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail)[:200] if detail else "refused"
