"""Per-plate reading time: our ONNX Runtime path against the old system's way, in one run.

    python bench/inference.py [--model models/hi-plate] [--images models/samples/*.jpg]
                              [--repeat 10] [--threads 2]

Ours: file bytes -> `decode_image` -> letterbox/normalise -> ONNX Runtime -> numpy decode +
NMS -> well calls + rows + stats (`PlateReader.read_bytes`).

Old system: `YOLO(model).predict()` on a temporary JPEG written to disk (Ultralytics, CPU) when
Ultralytics is installed (the [train] environment may have it); otherwise OpenCV's DNN module
(`cv2.dnn.readNetFromONNX`) with its own blob and NMS path, still writing and re-reading the
temporary JPEG per plate as the old system did. Both end in the same `core` well calls.

Prints median and p95 per plate for each path, the ratio of medians and how often the two
paths agree on the well calls. Both paths get the same thread count.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.calibration import CalibrationGrid  # noqa: E402
from core.detection import Detection  # noqa: E402
from core.wells import ClassMap, call_wells  # noqa: E402
from edge.detect.base import create_detector  # noqa: E402
from edge.detect.model import LoadedModel, load_model  # noqa: E402
from edge.detect.reader import PlateReader  # noqa: E402
from edge.detect.settings import OnnxDetectorSettings, TensorRTDetectorSettings  # noqa: E402


def calibration_for(image: Path) -> CalibrationGrid | None:
    sidecar = image.with_name(image.stem + ".calibration.json")
    return CalibrationGrid.from_json(sidecar.read_text()) if sidecar.exists() else None


class OpenCvOldWay:
    """The reference system's shape with OpenCV DNN: temp JPEG, blob, forward, NMS, calls."""

    label = "OpenCV DNN + temp JPEG"

    def __init__(self, model: LoadedModel, conf: float, iou: float) -> None:
        self.model = model
        self.net = cv2.dnn.readNetFromONNX(str(model.onnx_path))
        self.conf, self.iou = conf, iou
        self.tmpdir = tempfile.TemporaryDirectory(prefix="old-way-")

    def detections(self, image_path: Path) -> tuple[list[Detection], int, int]:
        frame = cv2.imread(str(image_path))
        tmp = os.path.join(self.tmpdir.name, "frame.jpg")
        cv2.imwrite(tmp, frame)  # the old system saved every frame, then read it back
        image = cv2.imread(tmp)
        h, w = image.shape[:2]
        spec = self.model.input
        r = min(spec.width / w, spec.height / h)
        nw, nh = round(w * r), round(h * r)
        left = (spec.width - nw) // 2 if spec.letterbox == "center" else 0
        top = (spec.height - nh) // 2 if spec.letterbox == "center" else 0
        boxed = cv2.copyMakeBorder(
            cv2.resize(image, (nw, nh)),
            top,
            spec.height - nh - top,
            left,
            spec.width - nw - left,
            cv2.BORDER_CONSTANT,
            value=(spec.pad_value,) * 3,
        )
        blob = cv2.dnn.blobFromImage(boxed, spec.scale, swapRB=spec.channels == "RGB")
        self.net.setInput(blob)
        out = np.asarray(self.net.forward())
        layout = self.model.output.layout
        arr = out[0].T if layout == "yolo_anchors_last" else out[0]
        if layout == "nms_free":
            keep = arr[:, 4] >= self.conf
            xyxy, scores, cids = arr[keep, :4], arr[keep, 4], arr[keep, 5].astype(int)
            idx = np.arange(len(scores))
        else:
            cls_scores = arr[:, 4:]
            cids = cls_scores.argmax(1)
            scores = cls_scores.max(1)
            keep = scores >= self.conf
            boxes, scores, cids = arr[keep, :4], scores[keep], cids[keep]
            if self.model.output.box == "cxcywh":
                xyxy = np.c_[boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2]
            else:
                xyxy = boxes
            xywh = np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]
            idx = np.asarray(
                cv2.dnn.NMSBoxesBatched(
                    xywh.tolist(), scores.tolist(), cids.tolist(), self.conf, self.iou
                ),
                dtype=int,
            ).reshape(-1)
        dets = []
        for i in idx:
            x1, y1, x2, y2 = xyxy[i]
            x1, x2 = sorted(((x1 - left) / r, (x2 - left) / r))
            y1, y2 = sorted(((y1 - top) / r, (y2 - top) / r))
            dets.append(
                Detection(
                    x1=float(np.clip(x1, 0, w)),
                    y1=float(np.clip(y1, 0, h)),
                    x2=float(np.clip(x2, 0, w)),
                    y2=float(np.clip(y2, 0, h)),
                    confidence=float(scores[i]),
                    class_id=int(cids[i]),
                    class_name=self.model.classes[int(cids[i])],
                )
            )
        return dets, w, h


class UltralyticsOldWay:
    """The reference system itself: `YOLO(onnx).predict(temp.jpg)` on CPU."""

    label = "Ultralytics predict + temp JPEG"

    def __init__(self, model: LoadedModel, conf: float, iou: float) -> None:
        from ultralytics import YOLO  # AGPL: bench only, never imported by the runtime

        self.yolo = YOLO(str(model.onnx_path), task="detect")
        self.model, self.conf, self.iou = model, conf, iou
        self.tmpdir = tempfile.TemporaryDirectory(prefix="old-way-")

    def detections(self, image_path: Path) -> tuple[list[Detection], int, int]:
        frame = cv2.imread(str(image_path))
        tmp = os.path.join(self.tmpdir.name, "frame.jpg")
        cv2.imwrite(tmp, frame)
        [result] = self.yolo.predict(
            tmp,
            imgsz=self.model.input.width,
            conf=self.conf,
            iou=self.iou,
            device="cpu",
            verbose=False,
        )
        h, w = result.orig_shape
        boxes = result.boxes
        dets = [
            Detection(
                x1=float(b[0]),
                y1=float(b[1]),
                x2=float(b[2]),
                y2=float(b[3]),
                confidence=float(c),
                class_id=int(k),
                class_name=self.model.classes[int(k)],
            )
            for b, c, k in zip(
                boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
            )
        ]
        return dets, w, h


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return (time.perf_counter() - start) * 1e3, value


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "hi-plate")
    parser.add_argument("--images", type=Path, nargs="*")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--old", choices=["auto", "opencv", "ultralytics"], default="auto")
    parser.add_argument(
        "--backend", choices=["onnx", "tensorrt"], default="onnx", help="our detector backend"
    )
    parser.add_argument("--engine-cache", type=Path, help="TensorRT engine cache (tensorrt)")
    args = parser.parse_args(argv)
    console = Console()

    images = args.images or sorted((ROOT / "models" / "samples").glob("*.jpg"))
    if not images:
        console.print("no images: pass --images or add plates to models/samples/")
        return 2
    model = load_model(args.model)
    cv2.setNumThreads(args.threads)
    settings: Any = OnnxDetectorSettings(model_dir=args.model, threads=args.threads, device="cpu")
    if args.backend == "tensorrt":
        extra = {"engine_cache_dir": args.engine_cache} if args.engine_cache else {}
        settings = TensorRTDetectorSettings(model_dir=args.model, threads=args.threads, **extra)
    detector = create_detector(settings)
    readers = {path: PlateReader(detector, grid=calibration_for(path)) for path in images}
    class_map = readers[images[0]].class_map
    use_ultra = args.old == "ultralytics" or (
        args.old == "auto" and importlib.util.find_spec("ultralytics") is not None
    )
    old_cls = UltralyticsOldWay if use_ultra else OpenCvOldWay
    old = old_cls(model, settings.min_confidence, settings.iou_threshold)

    def old_read(path: Path) -> dict[str, str]:
        dets, w, h = old.detections(path)
        grid = readers[path].grid_for(w, h)
        calls = call_wells(dets, grid, class_map=class_map or ClassMap.default())
        return {k: v.state for k, v in calls.items()}

    # Warm both paths (first-call allocations are not what a plate pays).
    for path in images:
        readers[path].read_bytes(path.read_bytes())
        old_read(path)

    ours_ms: list[float] = []
    old_ms: list[float] = []
    stages: dict[str, list[float]] = {}
    agree = total = 0
    for _ in track(range(args.repeat), description="timing", console=console):
        for path in images:
            reader = readers[path]
            t_ours, reading = timed(lambda p=path, r=reader: r.read_bytes(p.read_bytes()))
            t_old, old_calls = timed(lambda p=path: old_read(p))
            ours_ms.append(t_ours)
            old_ms.append(t_old)
            for key, value in reading.timings_ms.items():
                stages.setdefault(key, []).append(value)
            total += len(old_calls)
            agree += sum(reading.wells[w].state == s for w, s in old_calls.items())

    table = Table(title=f"per plate, {len(images)} images x {args.repeat} repeats")
    for col in ("path", "median ms", "p95 ms"):
        table.add_column(col)
    table.add_row(
        f"ours: {detector.backend} + numpy",
        f"{statistics.median(ours_ms):.1f}",
        f"{percentile(ours_ms, 95):.1f}",
    )
    table.add_row(
        f"old: {old.label}", f"{statistics.median(old_ms):.1f}", f"{percentile(old_ms, 95):.1f}"
    )
    console.print(table)
    console.print(
        "ours by stage (median ms): "
        + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages.items())
    )
    ratio = statistics.median(old_ms) / statistics.median(ours_ms)
    console.print(f"ratio (old median / ours median): {ratio:.2f}x  (target >= 3x)")
    console.print(f"well calls agreeing between the two paths: {agree}/{total}")
    providers = getattr(detector, "providers", detector.backend)
    console.print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"threads {args.threads}, model {model.name} {model.version} "
        f"{model.input.width}x{model.input.height}, providers {providers}"
    )
    detector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
