"""Signed model releases and a small model-API server for the appliance's OTA tests.

`release_dir` copies the shipped hi-wells ONNX files (fp32) into a release folder, optionally
perturbed (`rotate_classes`: every class call moves to the next class, a candidate that
disagrees on every well) or replaced by bytes that are not a model (`broken`). `sign_release`
builds and signs the `core.ota` manifest the way `microplate-cloud models publish` does.

`ModelServer` is a real HTTP server (ThreadingHTTPServer) that answers the three requests the
appliance makes, `GET /api/v1/device/model`, the presigned file GETs (with `Range`), and
`POST /api/v1/device/model/report`, and can cut a download halfway or answer 503.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from core.ota import (
    ArtefactFile,
    ModelManifest,
    SignedManifest,
    encode_signed,
    sign_manifest,
)
from core.rollout import ModelNotice
from edge.detect.settings import SHIPPED_WELLS_DIR

MODES = ("tilted", "untilted")
# The version of the shipped hi-wells model: the one in force before any update.
SHIPPED_VERSION: str = json.loads((SHIPPED_WELLS_DIR / "manifest.json").read_text())["version"]


def rotate_classes(src: Path, dest: Path) -> None:
    """The same network with its output classes rotated by one (flowing -> agglutinated ->
    invalid -> nowell -> flowing): every well's call changes."""
    model = onnx.load(str(src))
    graph = model.graph
    out = graph.output[0].name
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == out:
                node.output[i] = "probs_unrotated"
    graph.initializer.append(numpy_helper.from_array(np.array([3, 0, 1, 2], np.int64), "rot"))
    graph.node.append(helper.make_node("Gather", ["probs_unrotated", "rot"], [out], axis=1))
    onnx.save(model, str(dest))


def release_dir(folder: Path, *, perturbed: bool = False, broken: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for mode in MODES:
        src = SHIPPED_WELLS_DIR / f"{mode}.onnx"
        dest = folder / f"{mode}.onnx"
        if broken:
            dest.write_bytes(b"this is not an onnx graph\n" * 64)
        elif perturbed:
            rotate_classes(src, dest)
        else:
            shutil.copy(src, dest)
    return folder


def sign_release(
    folder: Path,
    key: Any,
    *,
    version: str,
    plate_formats: tuple[int, ...] = (96,),
    name: str = "hi-wells",
) -> SignedManifest:
    files = []
    for path in sorted(folder.glob("*.onnx")):
        files.append(
            ArtefactFile(
                path=path.name,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                size_bytes=path.stat().st_size,
                mode=path.name.split(".")[0],
                precision="fp32",
            )
        )
    manifest = ModelManifest(
        name=name,
        version=version,
        plate_formats=plate_formats,  # type: ignore[arg-type]
        modes=MODES,
        files=tuple(files),
        metrics={"validation.accuracy": 0.98},
        base_version=SHIPPED_VERSION,
        created_at=datetime.now(timezone.utc),
    )
    signed = sign_manifest(manifest, key)
    (folder / "manifest.signed.json").write_bytes(encode_signed(signed))
    return signed


def notice_for(
    signed: SignedManifest,
    *,
    assignment: uuid.UUID | None = None,
    revision: int = 1,
    shadow_plates: int = 3,
    threshold: float = 0.9,
    confirmed: bool = False,
) -> ModelNotice:
    return ModelNotice(
        assignment_id=assignment or uuid.uuid4(),
        revision=revision,
        name=signed.manifest.name,
        version=signed.manifest.version,
        manifest_sha256=signed.sha256,
        canary=True,
        shadow_plates=shadow_plates,
        agreement_threshold=threshold,
        switch_confirmed=confirmed,
        issued_at=datetime.now(timezone.utc),
    )


@dataclass
class ModelServer:
    token: str = "device-token-" + uuid.uuid4().hex
    folder: Path | None = None  # the release being offered
    notice: ModelNotice | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    report_status: int = 200  # 503: the cloud is "down" for reports
    offer_status: int = 200
    cut: dict[str, int] = field(default_factory=dict)  # file -> offset where it breaks off
    cut_times: int = 1_000_000  # how many GETs of a file are cut
    ranges: list[str] = field(default_factory=list)  # Range headers seen
    served: list[str] = field(default_factory=list)  # files asked for
    unauthorised: int = 0
    _cuts: dict[str, int] = field(default_factory=dict)

    def start(self) -> str:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    outer.unauthorised += 1
                    self._json(401, {"detail": "Invalid device token"})
                    return False
                return True

            def do_GET(self) -> None:
                if self.path == "/api/v1/device/model":
                    if not self._authorised():
                        return
                    if outer.offer_status != 200:
                        self._json(outer.offer_status, {"detail": "unavailable"})
                        return
                    self._json(200, outer.offer())
                elif self.path.startswith("/files/"):
                    # presigned URLs carry their own signature: no device token here
                    if "Authorization" in self.headers:
                        self._json(400, {"detail": "a presigned GET takes no token"})
                        return
                    self._file(self.path.removeprefix("/files/"))
                else:
                    self._json(404, {"detail": "Not Found"})

            def _file(self, name: str) -> None:
                assert outer.folder is not None
                outer.served.append(name)
                data = (outer.folder / name).read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    outer.ranges.append(f"{name}:{rng}")
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                limit = outer.cut.get(name)
                done = outer._cuts.get(name, 0)
                if limit is not None and done < outer.cut_times:
                    # the connection always breaks at file offset `limit`
                    outer._cuts[name] = done + 1
                    self.wfile.write(body[: max(0, limit - start)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def do_POST(self) -> None:
                if self.path != "/api/v1/device/model/report":
                    self._json(404, {"detail": "Not Found"})
                    return
                if not self._authorised():
                    return
                size = int(self.headers.get("Content-Length", "0"))
                doc = json.loads(self.rfile.read(size))
                if outer.report_status != 200:
                    self._json(outer.report_status, {"detail": "unavailable"})
                    return
                outer.reports.append(doc)
                self._json(200, {"state": doc["state"], "stage": "canary"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def offer(self) -> dict[str, Any]:
        assert self.folder is not None and self.notice is not None
        signed = json.loads((self.folder / "manifest.signed.json").read_bytes())
        return {
            "notice": json.loads(self.notice.model_dump_json()),
            "signed_manifest": signed,
            "manifest_url": f"{self.url}/files/manifest.signed.json",
            "files": [
                {
                    "path": f["path"],
                    "sha256": f["sha256"],
                    "size_bytes": f["size_bytes"],
                    "url": f"{self.url}/files/{f['path']}",
                }
                for f in signed["manifest"]["files"]
            ],
            "expires_in": 600,
        }

    def states(self) -> list[str]:
        return [r["state"] for r in self.reports]
