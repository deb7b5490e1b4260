"""The cloud's model endpoints as the appliance uses them (docs/ota.md, "On the appliance").

- `offer()`: `GET /api/v1/device/model` with the device token: the notice again, the signed
  manifest and fresh presigned URLs.
- `download(url, dest, limit)`: one presigned GET streamed into `dest`, never more than `limit`
  bytes; a file already partly there is resumed with a `Range` request (a server that ignores
  it answers 200 and the file starts again), so a cut download costs only what is missing.
- `report(report)`: `POST /api/v1/device/model/report`.

Errors say whether trying again may help: `ModelApiError.retry` is true for a network failure,
a timeout or a 5xx/429, false for a 4xx the cloud means (not assigned, another version).
The device token is sent only to the cloud's API, never to the presigned URLs (which carry
their own signature) and never logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from core.rollout import ModelNotice, ModelReport
from edge.ports import CloudError

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class ModelApiError(CloudError):
    pass


class DownloadFile:
    __slots__ = ("path", "sha256", "size_bytes", "url")

    def __init__(self, path: str, sha256: str, size_bytes: int, url: str) -> None:
        self.path, self.sha256, self.size_bytes, self.url = path, sha256, size_bytes, url


class Offer:
    """`GET /api/v1/device/model`'s answer, checked only as far as the appliance needs."""

    def __init__(self, notice: ModelNotice, manifest_url: str, files: list[DownloadFile]) -> None:
        self.notice, self.manifest_url, self.files = notice, manifest_url, files


def _offer(data: Any) -> Offer:
    try:
        notice = ModelNotice.model_validate(data["notice"])
        files = [
            DownloadFile(str(f["path"]), str(f["sha256"]), int(f["size_bytes"]), str(f["url"]))
            for f in data["files"]
        ]
        return Offer(notice, str(data["manifest_url"]), files)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelApiError(f"the cloud's model offer is malformed ({exc})", retry=False) from None


class ModelApi:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 60.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def _api(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}", **(extra_headers or {})}
        try:
            resp = self._client.request(
                method, f"{self._base}{path}", headers=headers, content=content
            )
        except httpx.HTTPError as exc:
            raise ModelApiError(
                f"the cloud is unreachable ({type(exc).__name__})", retry=True
            ) from None
        if resp.status_code >= 400:
            try:
                detail = str(resp.json().get("detail", ""))[:200]
            except ValueError:
                detail = ""
            raise ModelApiError(
                f"{method} {path}: HTTP {resp.status_code} {detail}".strip(),
                retry=resp.status_code in _RETRY_STATUS,
                status=resp.status_code,
            )
        return resp

    def offer(self) -> Offer:
        return _offer(self._api("GET", "/api/v1/device/model").json())

    def report(self, report: ModelReport) -> None:
        self._api(
            "POST",
            "/api/v1/device/model/report",
            content=report.model_dump_json().encode("utf-8"),
            extra_headers={"Content-Type": "application/json"},
        )

    def download(self, url: str, dest: Path, *, limit: int) -> int:
        """Stream `url` into `dest` (resuming a partial file); stops after `limit` bytes.
        Returns the size of `dest`. ModelApiError(retry=True) when the transfer broke off."""
        have = dest.stat().st_size if dest.exists() else 0
        if have > limit:
            dest.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with self._client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 416 and have:
                    return have  # nothing left to send: the file is whole (verify decides)
                if resp.status_code not in (200, 206):
                    raise ModelApiError(
                        f"download {dest.name}: HTTP {resp.status_code}",
                        retry=resp.status_code in _RETRY_STATUS,
                        status=resp.status_code,
                    )
                mode = "ab" if resp.status_code == 206 and have else "wb"
                size = have if mode == "ab" else 0
                with dest.open(mode) as fh:
                    for chunk in resp.iter_bytes():  # as received: a cut keeps what came
                        room = limit + 1 - size  # one byte over the limit is enough to refuse
                        if room <= 0:
                            break
                        fh.write(chunk[:room])
                        size += min(len(chunk), room)
                    fh.flush()
                return size
        except httpx.HTTPError as exc:
            raise ModelApiError(
                f"download {dest.name} broke off ({type(exc).__name__})", retry=True
            ) from None
