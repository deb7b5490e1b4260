"""A small reference decoder for the shipped ONNX, independent of the edge's detection code.

Centred letterbox, `yolo_anchors_last` / `cxcywh` decode, class-agnostic NMS, boxes back in
image pixels as `core.detection.Detection`. The tests use it to check that the exported graph
means what the manifest says; `models.evaluate` uses the edge's own decoder when it is present
and this one otherwise (the report says which).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.detection import Detection


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
    classes: list[str],
    conf: float = 0.25,
    iou: float = 0.5,
) -> list[Detection]:
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
        Detection(
            x1=float(x1[i]),
            y1=float(y1[i]),
            x2=float(x2[i]),
            y2=float(y2[i]),
            confidence=min(1.0, max(0.0, float(best[i]))),
            class_id=int(cls[i]),
            class_name=classes[int(cls[i])],
        )
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

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        tensor, gain, px, py = letterbox_center(image_bgr, self.size, self.pad_value)
        (out,) = self.session.run(None, {self.input_name: tensor})
        return decode(out, gain, px, py, classes=self.classes, conf=self.conf, iou=self.iou)
