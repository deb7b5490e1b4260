"""A small, private reference decoder for the shipped ONNX and a well caller.

Used by `models.evaluate` and the tests to check the exported graph independently of the edge's
detection code (written in parallel): centred letterbox, `yolo_anchors_last` / `cxcywh` decode,
per-class NMS, boxes back in image pixels, then box-centre-in-cell well calls. The product's own
path is `edge.detect` + `core.wells`; `models.evaluate --decoder shared` uses that one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2


def letterbox_center(
    image_bgr: np.ndarray, size: int, pad_value: int = 114
) -> tuple[np.ndarray, float, float, float]:
    """BGR image -> NCHW float32 RGB tensor; returns (tensor, gain, pad_x, pad_y)."""
    h, w = image_bgr.shape[:2]
    gain = min(size / h, size / w)
    nw, nh = round(w * gain), round(h * gain)
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - nw) / 2, (size - nh) / 2
    left, top = round(pad_x - 0.1), round(pad_y - 0.1)
    canvas = np.full((size, size, 3), pad_value, np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    tensor = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(tensor), gain, float(left), float(top)


def decode(
    output: np.ndarray,
    gain: float,
    pad_x: float,
    pad_y: float,
    *,
    conf: float = 0.25,
    iou: float = 0.5,
) -> list[Box]:
    """`[1, 4+nc, N]` cxcywh + sigmoid scores -> boxes in original image pixels after NMS."""
    pred = output[0].T  # (N, 4+nc)
    scores = pred[:, 4:]
    cls = scores.argmax(axis=1)
    best = scores[np.arange(len(cls)), cls]
    keep = best >= conf
    pred, cls, best = pred[keep], cls[keep], best[keep]
    if len(pred) == 0:
        return []
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    x1 = (cx - w / 2 - pad_x) / gain
    y1 = (cy - h / 2 - pad_y) / gain
    x2 = (cx + w / 2 - pad_x) / gain
    y2 = (cy + h / 2 - pad_y) / gain
    # Class-agnostic NMS: one well holds one thing, so overlapping boxes of different classes
    # compete and the most confident survives.
    rects = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).astype(float).tolist()
    idx = cv2.dnn.NMSBoxes(rects, best.astype(float).tolist(), conf, iou)
    idx = np.array(idx).reshape(-1)
    return [
        Box(float(x1[i]), float(y1[i]), float(x2[i]), float(y2[i]), float(best[i]), int(cls[i]))
        for i in idx
    ]


class ReferenceDetector:
    """ONNX Runtime session + the reference pre/post-processing, configured by a manifest."""

    def __init__(self, model_dir: Path, *, conf: float = 0.25, iou: float = 0.5) -> None:
        import onnxruntime as ort

        manifest: dict[str, Any] = json.loads((model_dir / "manifest.json").read_text())
        if manifest["output"] != {"layout": "yolo_anchors_last", "box": "cxcywh"}:
            raise ValueError(
                f"reference decoder handles yolo_anchors_last/cxcywh only: {manifest['output']}"
            )
        if manifest["input"]["letterbox"] != "center":
            raise ValueError("reference decoder handles centred letterbox only")
        self.manifest = manifest
        self.classes: list[str] = list(manifest["classes"])
        self.size = int(manifest["input"]["height"])
        self.pad_value = int(manifest["input"]["pad_value"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(
            str(model_dir / manifest["file"]), opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.conf, self.iou = conf, iou

    def __call__(self, image_bgr: np.ndarray) -> list[Box]:
        tensor, gain, px, py = letterbox_center(image_bgr, self.size, self.pad_value)
        (out,) = self.session.run(None, {self.input_name: tensor})
        return decode(out, gain, px, py, conf=self.conf, iou=self.iou)


def call_wells(
    boxes: list[Box],
    calibration: dict[str, Any],
    classes: list[str],
    n_rows: int = 8,
    n_cols: int = 12,
) -> list[list[str]]:
    """Well states by the product's rule: box centre in the cell; highest confidence wins."""
    xs = np.asarray(calibration["columns"], float)
    ys = np.asarray(calibration["rows"], float)
    best: dict[tuple[int, int], Box] = {}
    for box in boxes:
        cx, cy = box.center
        c = int(np.searchsorted(xs, cx, side="right")) - 1
        r = int(np.searchsorted(ys, cy, side="right")) - 1
        if not (0 <= c < n_cols and 0 <= r < n_rows):
            continue
        if (r, c) not in best or box.score > best[(r, c)].score:
            best[(r, c)] = box
    return [
        [classes[best[(r, c)].class_id] if (r, c) in best else "unread" for c in range(n_cols)]
        for r in range(n_rows)
    ]
