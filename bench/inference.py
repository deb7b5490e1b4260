"""Per-plate reading time: our default path against the old system's way, in one run.

    python bench/inference.py [--model models/hi-plate] [--wells models/hi-wells]
                              [--images models/samples/*.jpg] [--repeat 12] [--threads 2]
                              [--old auto|opencv|ultralytics]

Ours, the product default (a calibrated plate and the well classifier): file bytes ->
`decode_image` (reduced as far as the well crops allow) -> `crop_wells` -> the classifier on
all wells in one batch (ONNX Runtime, int8 on the CPU) -> well calls -> plate-quality gate ->
rows + stats (`PlateReader.read_bytes` with `wells=`), in each plate's reading mode (its
calibration's `reading`, else `index.json` beside it, else `--reading`). Also timed: ours
with the detector (letterbox -> YOLO int8 -> decode + NMS -> well calls), the path before the
classifier and still the one without a calibration. Without `--wells` (or the folder) "ours"
is the detector path.

Old system: `YOLO(model.onnx).predict()` on a temporary JPEG written to disk (Ultralytics, CPU)
on the fp32 network as trained, when Ultralytics is installed (the training venv may have it:
AGPL, so only this bench ever imports it); otherwise OpenCV's DNN module
(`cv2.dnn.readNetFromONNX`) with its own blob and NMS path, still writing and re-reading the
temporary JPEG per plate as the old system did. All end in the same `core` well calls.

The three paths alternate per image (each repeat takes the next of their 6 orders, so each
follows each other equally often; use a multiple of 6 repeats), so whatever load the machine
carries hits all of them alike. Prints median and p95 per plate, the ratios of medians,
how often the paths agree on the well calls (and with the plates' truth when they have a
`.truth.json`), the stages, the machine and its load average. Figures, never a pass/fail.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import json
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
from edge.demo import reading_for  # noqa: E402  (index.json beside the bundled plates)
from edge.detect.base import create_detector  # noqa: E402
from edge.detect.classifier import create_classifier  # noqa: E402
from edge.detect.model import LoadedModel, load_model  # noqa: E402
from edge.detect.reader import PlateReader  # noqa: E402
from edge.detect.settings import OnnxDetectorSettings, TensorRTDetectorSettings  # noqa: E402


def truth_for(image: Path) -> dict[str, str] | None:
    sidecar = image.with_name(image.stem + ".truth.json")
    if not sidecar.exists():
        return None
    return {w["well_id"]: w["state"] for w in json.loads(sidecar.read_text())["wells"]}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        self.stages: dict[str, list[float]] = {}

    def detections(self, image_path: Path) -> tuple[list[Detection], int, int]:
        t0 = time.perf_counter()
        frame = cv2.imread(str(image_path))
        tmp = os.path.join(self.tmpdir.name, "frame.jpg")
        cv2.imwrite(tmp, frame)  # the old system saved every frame, then read it back
        image = cv2.imread(tmp)
        t1 = time.perf_counter()
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
        t2 = time.perf_counter()
        self.net.setInput(blob)
        out = np.asarray(self.net.forward())
        t3 = time.perf_counter()
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
        t4 = time.perf_counter()
        for key, value in (
            ("read+write+read JPEG", t1 - t0),
            ("blob", t2 - t1),
            ("infer", t3 - t2),
            ("decode+NMS", t4 - t3),
        ):
            self.stages.setdefault(key, []).append(value * 1e3)
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
    parser.add_argument("--repeat", type=int, default=12)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--old", choices=["auto", "opencv", "ultralytics"], default="auto")
    parser.add_argument(
        "--backend", choices=["onnx", "tensorrt"], default="onnx", help="our detector backend"
    )
    parser.add_argument("--engine-cache", type=Path, help="TensorRT engine cache (tensorrt)")
    parser.add_argument(
        "--wells",
        type=Path,
        default=ROOT / "models" / "hi-wells",
        help="well classifier folder; the default path when it exists",
    )
    parser.add_argument("--reading", choices=["tilted", "untilted"], default="tilted")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 132))  # keep the table unwrapped in logs

    images = args.images or sorted((ROOT / "models" / "samples").glob("*.jpg"))
    if not images:
        console.print("no images: pass --images or add plates to models/samples/")
        return 2
    fp32_model = load_model(args.model)  # the network as trained: what the old way runs
    cv2.setNumThreads(args.threads)
    settings: Any = OnnxDetectorSettings(model_dir=args.model, threads=args.threads, device="cpu")
    if args.backend == "tensorrt":
        extra = {"engine_cache_dir": args.engine_cache} if args.engine_cache else {}
        settings = TensorRTDetectorSettings(model_dir=args.model, threads=args.threads, **extra)
    detector = create_detector(settings)
    wells = None
    if args.wells is not None and (args.wells / "manifest.json").is_file():
        wells = create_classifier(settings.model_copy(update={"wells_model_dir": args.wells}))
    detectors = {"ours": detector}
    readers = {
        "ours": {
            path: PlateReader(
                detector,
                grid=calibration_for(path),
                wells=wells,
                reading=reading_for(path) or args.reading,  # type: ignore[arg-type]
            )
            for path in images
        }
    }
    if wells is not None:
        detectors["ours detector"] = detector
        readers["ours detector"] = {
            path: PlateReader(detector, grid=calibration_for(path)) for path in images
        }
    class_map = readers["ours"][images[0]].class_map
    truths = {path: truth_for(path) for path in images}
    use_ultra = args.old == "ultralytics" or (
        args.old == "auto" and importlib.util.find_spec("ultralytics") is not None
    )
    old_cls = UltralyticsOldWay if use_ultra else OpenCvOldWay
    old = old_cls(fp32_model, settings.min_confidence, settings.iou_threshold)

    def old_read(path: Path) -> dict[str, str]:
        dets, w, h = old.detections(path)
        grid = readers["ours"][path].grid_for(w, h)
        calls = call_wells(dets, grid, class_map=class_map or ClassMap.default())
        return {k: v.state for k, v in calls.items()}

    def ours_read(name: str) -> Callable[[Path], dict[str, str]]:
        def read(path: Path) -> dict[str, str]:
            reading = readers[name][path].read_bytes(path.read_bytes())
            for key, value in reading.timings_ms.items():
                stages[name].setdefault(key, []).append(value)
            return {w: c.state for w, c in reading.wells.items()}

        return read

    stages: dict[str, dict[str, list[float]]] = {name: {} for name in detectors}
    paths: dict[str, Callable[[Path], dict[str, str]]] = {
        name: ours_read(name) for name in detectors
    }
    paths["old"] = old_read
    # Warm every path (first-call allocations are not what a plate pays).
    for path in images:
        for read in paths.values():
            read(path)
    for per_path in stages.values():
        per_path.clear()

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in paths}
    calls: dict[str, list[dict[str, str]]] = {name: [] for name in paths}
    # Every order of the paths in turn: each path follows each other one equally often (a path
    # run right after Ultralytics' session shares the cores with its still-spinning threads).
    orders = list(itertools.permutations(paths))
    for rep in track(range(args.repeat), description="timing", console=console):
        turn = orders[rep % len(orders)]
        for path in images:
            for name in turn:
                ms, result = timed(functools.partial(paths[name], path))
                times[name].append(ms)
                calls[name].append(result)
    load_after = os.getloadavg()

    det_label = (
        f"{detector.backend} {detector.model.precision} "
        f"{detector.model.input.width}x{detector.model.input.height} + numpy"
    )
    labels = {
        "ours": f"ours, default: well classifier {wells.model.name} {wells.model.version} "
        f"{wells.backend} {wells.precision}, {wells.model.size}px crops"
        if wells is not None
        else f"ours: detector {det_label}",
        "ours detector": f"ours with the detector (no calibration): {det_label}",
        "old": f"old: {old.label} (fp32 {fp32_model.input.width}x{fp32_model.input.height})",
    }
    plates = len(images) * args.repeat
    table = Table(title=f"per plate, {len(images)} images x {args.repeat} repeats, interleaved")
    for col in ("path", "median ms", "p95 ms", "old / this (medians)", "wells right (truth)"):
        table.add_column(col)
    old_median = statistics.median(times["old"])
    for name in paths:
        right = total = 0
        for i, result in enumerate(calls[name]):
            truth = truths[images[i % len(images)]]
            if truth:
                right += sum(result.get(w) == s for w, s in truth.items())
                total += len(truth)
        table.add_row(
            labels[name],
            f"{statistics.median(times[name]):.1f}",
            f"{percentile(times[name], 95):.1f}",
            f"{old_median / statistics.median(times[name]):.2f}x" if name != "old" else "",
            f"{right}/{total}" if total else "n/a",
        )
    console.print(table)
    for name in detectors:
        console.print(
            f"{name} by stage (median ms): "
            + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages[name].items())
        )
    old_stages = getattr(old, "stages", {})
    if old_stages:
        console.print(
            "old by stage (median ms): "
            + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in old_stages.items())
        )
    ratio = old_median / statistics.median(times["ours"])
    console.print(f"ratio, product default (old median / ours median): {ratio:.2f}x (target >= 3x)")
    if "ours detector" in times:
        ratio_det = old_median / statistics.median(times["ours detector"])
        console.print(f"ratio, ours with the detector: {ratio_det:.2f}x")
    for name in detectors:
        same = sum(
            sum(a.get(w) == s for w, s in b.items())
            for a, b in zip(calls[name], calls["old"], strict=True)
        )
        console.print(
            f"well calls agreeing, {name} vs old: {same}/{sum(len(b) for b in calls['old'])}"
        )
    providers = getattr(detectors["ours"], "providers", detectors["ours"].backend)
    console.print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} "
        f"before / {load_after[0]:.1f} after ({plates} plates per path), threads {args.threads}, "
        f"model {fp32_model.name} {fp32_model.version}, providers {providers}"
    )
    detector.close()
    if wells is not None:
        wells.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
