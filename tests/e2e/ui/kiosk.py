"""A real appliance behind the real API and the touchscreen pages, served by uvicorn.

With the shipped ONNX model and the bundled sample plates present (``models/hi-plate``,
``models/samples``) the appliance reads those plates with ONNX Runtime through the ``files``
capture source. Until they are in the tree it reads synthetic plates with the scripted
(fake) detector, so the pages are still driven end to end through the real API.

``python -m tests.e2e.ui.kiosk`` serves one for a person to look at (prints the URL and secret).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import uvicorn
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from core.calibration import CalibrationGrid
from edge.api import create_app
from edge.app import Appliance
from edge.config import EdgeSettings
from edge.ui import mount_ui
from tests.edge import plates

REPO = Path(__file__).resolve().parents[3]
MODEL_DIR = REPO / "models" / "hi-plate"
SAMPLES_DIR = REPO / "models" / "samples"
OPERATOR_SECRET = "kiosk-operator-secret-0123456789"
SUPERVISOR_PIN = "2468"
PIN_HASH = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),)).hash(
    SUPERVISOR_PIN
)
SYNTHETIC_ENDPOINTS = [plates.PLATE_A, plates.PLATE_B, [4, 6, 5, 7, 4, 6, 5, 0]]
# The appliance recognises an image it has read before (same bytes, same run), as it should;
# a camera never takes the same picture twice, so the files source gets this many distinct
# frames to cycle through (more than the tests capture).
DISTINCT_FRAMES = 24


def real_model_available() -> bool:
    return (MODEL_DIR / "model.onnx").is_file() and (SAMPLES_DIR / "index.json").is_file()


@dataclass
class Kiosk:
    appliance: Appliance
    server: uvicorn.Server
    thread: threading.Thread
    url: str
    share_dir: Path
    real_model: bool

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.appliance.stop()


def _sample_plates(folder: Path) -> tuple[list[Path], dict[str, Any]]:
    """Distinct frames of the bundled plates that sit on the first plate's grid, and that
    calibration. Each copy differs from the original in one corner pixel. (The bundled plates
    are photographed from different angles: read through another plate's grid, the appliance's
    plate-quality gate rightly holds them for review.)"""
    index = json.loads((SAMPLES_DIR / "index.json").read_text(encoding="utf-8"))
    first = json.loads((SAMPLES_DIR / index[0]["calibration"]).read_text(encoding="utf-8"))
    chosen = [
        entry
        for entry in index
        if json.loads((SAMPLES_DIR / entry["calibration"]).read_text(encoding="utf-8"))["columns"]
        == first["columns"]
    ]
    grid = first
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(DISTINCT_FRAMES):
        source = SAMPLES_DIR / chosen[i % len(chosen)]["image"]
        image = cv2.imread(str(source))
        if image is None:
            raise RuntimeError(f"cannot read the bundled plate {source}")
        image[0, 0] = (i * 7) % 256
        # High-quality JPEG, as a camera delivers: small files keep each capture quick.
        path = folder / f"frame-{i + 1:02d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths, grid


def _synthetic_plates(folder: Path) -> tuple[list[Path], dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(DISTINCT_FRAMES):
        # Frame i shows plate i % 3, as the scripted detector reports it for the i-th read.
        endpoints = SYNTHETIC_ENDPOINTS[i % len(SYNTHETIC_ENDPOINTS)]
        path = folder / f"plate-{i + 1:02d}.jpg"
        path.write_bytes(plates.jpeg(plates.plate_image(endpoints, seed=i)))
        paths.append(path)
    # The uniform grid the synthetic plates are drawn on.
    w, h, m = plates.WIDTH, plates.HEIGHT, plates.MARGIN
    grid = {
        "columns": [round(w * m + w * (1 - 2 * m) * i / 12, 1) for i in range(13)],
        "rows": [round(h * m + h * (1 - 2 * m) * i / 8, 1) for i in range(9)],
        "image_width": w,
        "image_height": h,
        "format_version": 3,
    }
    return paths, grid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_kiosk(tmp: Path, *, calibrate: bool = True, real: bool | None = None) -> Kiosk:
    real = real_model_available() if real is None else real
    if real:
        paths, grid = _sample_plates(tmp / "plates")
        detector: dict[str, Any] = {"type": "onnx", "model_dir": str(MODEL_DIR)}
    else:
        paths, grid = _synthetic_plates(tmp / "plates")
        detector = plates.fake_detector(*SYNTHETIC_ENDPOINTS)
    settings = EdgeSettings(
        mode="development",
        data_dir=tmp / "data",
        share_dir=tmp / "share",
        capture={"type": "files", "paths": [str(p) for p in paths]},
        detector=detector,
        auth={"operator_secret": OPERATOR_SECRET, "supervisor_pin_hash": PIN_HASH},
        retention={"disk_floor_mb": 0},
    )
    appliance = Appliance(settings)
    appliance.start()
    try:
        if calibrate:
            appliance.calibration.set(CalibrationGrid.from_legacy(grid), actor="test-setup")
        app = create_app(appliance)
        mount_ui(app, appliance)
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_config=None)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="kiosk-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the kiosk server did not start")
            time.sleep(0.05)
    except BaseException:
        appliance.stop()
        raise
    return Kiosk(appliance, server, thread, f"http://127.0.0.1:{port}", tmp / "share", real)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        kiosk = start_kiosk(Path(d))
        print(f"{kiosk.url}/ui/capture  secret: {OPERATOR_SECRET}  PIN: {SUPERVISOR_PIN}")
        print("real model" if kiosk.real_model else "synthetic plates, fake detector")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            kiosk.stop()
