"""What shadowing a candidate model costs per plate, against reading without one, in one run.

    python bench/ota_shadow.py [--plates 40]

The appliance's reading service (`PlateReadingService.read_frame`, the read thread's work:
decode, the classifier's crops and inference, rows, the plate-quality gate) reads synthetic
96-well plates on a calibration grid with the shipped hi-wells classifier. Plates alternate:
one read with no candidate, the next with a candidate shadowing through the real
`OtaService.shadow_read` (the candidate is the shipped fp32 files, as a release carries them;
the tally and the fsynced state file are part of each shadowed plate). Prints the median per
plate of both, the ratio, and the median of the candidate's own read time as the service
tallies it. The detector is the fake backend: only the classifier path is measured.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from core.calibration import CalibrationGrid  # noqa: E402
from core.ota import generate_private_key, public_key_text  # noqa: E402
from core.plate import PLATE_96  # noqa: E402
from core.rollout import ModelNotice  # noqa: E402
from edge.app import Appliance  # noqa: E402
from edge.config import EdgeSettings  # noqa: E402
from edge.detect.settings import SHIPPED_WELLS_DIR  # noqa: E402
from edge.services.ota import Candidate, OtaService, OtaState  # noqa: E402

WIDTH, HEIGHT, MARGIN = 1200, 800, 0.03


def plate(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((HEIGHT, WIDTH, 3), 235, np.uint8)
    img += rng.integers(0, 8, img.shape, dtype=np.uint8)
    radius = int(min(WIDTH / 12, HEIGHT / 8) * 0.35)
    for r in range(8):
        end = int(rng.integers(0, 13))
        for c in range(12):
            cx = WIDTH * MARGIN + WIDTH * (1 - 2 * MARGIN) * (c + 0.5) / 12
            cy = HEIGHT * MARGIN + HEIGHT * (1 - 2 * MARGIN) * (r + 0.5) / 8
            colour = (40, 40, 200) if c < end else (160, 160, 230)
            cv2.circle(img, (int(cx), int(cy)), radius, colour, -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plates", type=int, default=40, help="plates of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ota-bench-") as tmp_name:
        tmp = Path(tmp_name)
        running = tmp / "hi-wells"
        shutil.copytree(SHIPPED_WELLS_DIR, running)
        candidate_dir = tmp / "candidate"
        candidate_dir.mkdir()
        doc = (running / "manifest.json").read_text(encoding="utf-8")
        import json

        manifest = json.loads(doc)
        for mode in ("tilted", "untilted"):
            shutil.copy(running / f"{mode}.onnx", candidate_dir / f"{mode}.onnx")
            manifest["modes"][mode]["files"].pop("int8", None)
        manifest["version"] = "9.9.9"
        (candidate_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        key = tmp / "model.pub"
        key.write_text(public_key_text(generate_private_key()), encoding="ascii")
        settings = EdgeSettings(
            data_dir=tmp / "data",
            share_dir=tmp / "share",
            detector={"type": "fake", "wells_model_dir": str(running)},
            ota={"public_key_file": str(key)},
        )
        app = Appliance(settings)
        app.start()
        try:
            app.calibration.set(
                CalibrationGrid.uniform(WIDTH, HEIGHT, PLATE_96, MARGIN), actor="bench"
            )
            ota = OtaService(
                settings.ota, OtaState(tmp / "ota"), app.reading, plate_format=lambda: 96
            )
            notice = ModelNotice(
                assignment_id=uuid.uuid4(),
                revision=1,
                name="hi-wells",
                version="9.9.9",
                manifest_sha256="0" * 64,
                canary=True,
                shadow_plates=10_000,
                agreement_threshold=0.98,
                issued_at=datetime.now(timezone.utc),
            )
            cand = Candidate.of(notice)
            cand.directory = str(candidate_dir)
            ota.state.candidate = cand
            ota._classifier = app.reading.load_classifier(candidate_dir)
            current = app.reading.wells
            print(
                f"model in force: {current.model.name} {current.model.version} "
                f"{current.backend} {current.precision}; candidate: "
                f"{ota._classifier.backend} {ota._classifier.precision}"
            )
            plain: list[float] = []
            shadowed: list[float] = []
            for i in range(2):  # warm-up, not counted
                app.reading.read_frame(None, plate(10_000 + i))
            for i in range(args.plates):
                for shadow, into in ((None, plain), (ota, shadowed)):
                    data = plate(2 * i + (shadow is not None))
                    app.reading.shadow = shadow
                    t0 = time.perf_counter()
                    app.reading.read_frame(None, data)
                    into.append((time.perf_counter() - t0) * 1e3)
            app.reading.shadow = None
            tally = ota.state.candidate.tally if ota.state.candidate else None
        finally:
            app.stop()
    p, s = statistics.median(plain), statistics.median(shadowed)
    print(f"plates of each kind: {args.plates} (alternated)")
    print(f"read per plate, no candidate:       median {p:7.2f} ms")
    print(f"read per plate, candidate shadowing: median {s:7.2f} ms  ({s / p:.2f}x)")
    if tally is not None and tally.plates:
        print(
            f"as the service tallies it: model in force {tally.current_ms / tally.plates:.2f} ms, "
            f"candidate {tally.candidate_ms / tally.plates:.2f} ms per plate, "
            f"agreement {tally.agreement:.4f} over {tally.plates} plates"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
