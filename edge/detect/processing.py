"""Pre- and post-processing shared by every backend (pure numpy + OpenCV resize).

Output contract (the one place it is written down)
--------------------------------------------------
`postprocess(outputs, model, info, ...)` returns `list[core.detection.Detection]`:

- boxes are `(x1, y1, x2, y2)` floats in pixels of the ORIGINAL image (before letterbox),
  x to the right, y down, clipped to `[0, width] x [0, height]`, with `x1 <= x2`, `y1 <= y2`;
- `confidence` is the class score in `[0, 1]` (already sigmoid in every supported head);
- `class_id` indexes the model's `classes`; `class_name` is that entry, unmapped (turning
  names into well states is `core.wells.ClassMap`'s job);
- detections below `min_confidence` are dropped; for the anchor layouts a class-aware NMS at
  `iou_threshold` has been applied (an `nms_free` head has done its own);
- the list is sorted by confidence, highest first, and holds at most `max_detections`.

Raw head layouts understood by `decode` (see the model manifest contract):
`yolo_anchors_last` `[1, 4+nc, N]`, `yolo_anchors_first` `[1, N, 4+nc]` (boxes `cxcywh` or
`xyxy`, then one score per class) and `nms_free` `[1, N, 6]` rows `(x1, y1, x2, y2, score,
class)`; all coordinates in pixels of the letterboxed input tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from core.detection import Detection
from edge.detect.errors import DetectorError
from edge.detect.model import BoxFormat, InputSpec, Layout, LetterboxMode, LoadedModel


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was placed into the model input, to map boxes back exactly."""

    src_width: int
    src_height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int


def letterbox(
    image: np.ndarray,
    height: int,
    width: int,
    *,
    mode: LetterboxMode = "center",
    pad_value: int = 114,
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize `image` (H, W, 3) keeping its aspect ratio and pad it to `height` x `width`.

    `center` pads both sides equally (Ultralytics); `topleft` puts the image at (0, 0) and pads
    right and bottom (LibreYOLO).
    """
    src_h, src_w = image.shape[:2]
    if src_h == 0 or src_w == 0:
        raise DetectorError("cannot letterbox an empty image")
    ratio = min(height / src_h, width / src_w)
    new_w = max(1, min(width, round(src_w * ratio)))
    new_h = max(1, min(height, round(src_h * ratio)))
    if (new_w, new_h) != (src_w, src_h):
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    else:
        resized = image
    if mode == "center":
        pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    else:
        pad_x, pad_y = 0, 0
    canvas = np.full((height, width, image.shape[2]), pad_value, dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    info = LetterboxInfo(
        src_width=src_w,
        src_height=src_h,
        scale_x=new_w / src_w,
        scale_y=new_h / src_h,
        pad_x=pad_x,
        pad_y=pad_y,
    )
    return canvas, info


def to_tensor(
    image_bgr: np.ndarray, *, channels: str = "RGB", scale: float = 1 / 255
) -> np.ndarray:
    """HWC uint8 BGR -> contiguous NCHW float32, channel order and scale as the model wants."""
    img = image_bgr[:, :, ::-1] if channels == "RGB" else image_bgr
    chw = np.transpose(img, (2, 0, 1))
    tensor = np.empty((1, *chw.shape), dtype=np.float32)
    np.multiply(chw, np.float32(scale), out=tensor[0], casting="unsafe")
    return tensor


def prepare_input(image_bgr: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, LetterboxInfo]:
    """An image as the model's input tensor (letterbox, channel order, scale) and where it was
    placed: what inference and every calibration set (TensorRT INT8, ONNX quantization) use."""
    boxed, info = letterbox(
        image_bgr, spec.height, spec.width, mode=spec.letterbox, pad_value=spec.pad_value
    )
    return to_tensor(boxed, channels=spec.channels, scale=spec.scale), info


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    out[:, 0] = boxes[:, 0] - half_w
    out[:, 1] = boxes[:, 1] - half_h
    out[:, 2] = boxes[:, 0] + half_w
    out[:, 3] = boxes[:, 1] + half_h
    return out


def decode(
    output: np.ndarray,
    layout: Layout,
    box_format: BoxFormat,
    *,
    num_classes: int,
    min_confidence: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw head output -> (boxes xyxy [K, 4], scores [K], class ids [K]) in input pixels.

    Only candidates with a score >= `min_confidence` are returned. Raises `DetectorError` when
    the tensor's shape does not fit the layout (a wrong manifest would otherwise decode garbage).
    """
    arr = np.asarray(output)
    if arr.ndim == 3:
        if arr.shape[0] != 1:
            raise DetectorError(f"expected a batch of 1, got output shape {arr.shape}")
        arr = arr[0]
    if arr.ndim != 2:
        raise DetectorError(f"output shape {np.shape(output)} is not [1, A, B]")
    if layout == "nms_free":
        if arr.shape[1] != 6:
            raise DetectorError(f"nms_free output must be [1, N, 6], got {np.shape(output)}")
        rows = arr[arr[:, 4] >= min_confidence]
        boxes = rows[:, :4].astype(np.float32)
        if box_format == "cxcywh":
            boxes = cxcywh_to_xyxy(boxes)
        class_ids = rows[:, 5].round().astype(np.int64)
        if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= num_classes):
            raise DetectorError(
                f"nms_free output holds class ids outside 0..{num_classes - 1}: the manifest's "
                "classes do not match the model"
            )
        return boxes, rows[:, 4].astype(np.float32), class_ids
    width = 4 + num_classes
    if layout == "yolo_anchors_last":
        if arr.shape[0] != width:
            raise DetectorError(
                f"yolo_anchors_last output must be [1, {width}, N] for {num_classes} classes, "
                f"got {np.shape(output)}"
            )
        arr = arr.T
    elif arr.shape[1] != width:
        raise DetectorError(
            f"yolo_anchors_first output must be [1, N, {width}] for {num_classes} classes, "
            f"got {np.shape(output)}"
        )
    class_scores = arr[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_ids)), class_ids]
    keep = scores >= min_confidence
    boxes = arr[keep, :4].astype(np.float32)
    if box_format == "cxcywh":
        boxes = cxcywh_to_xyxy(boxes)
    return boxes, scores[keep].astype(np.float32), class_ids[keep].astype(np.int64)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int = 1000,
) -> np.ndarray:
    """Class-aware greedy NMS; returns kept indices, highest score first.

    OpenCV's C++ loop (`cv2.dnn.NMSBoxesBatched`) when this OpenCV has its DNN module: a plate
    gives several hundred candidates for 96 wells, and the numpy loop below (`nms_numpy`, the
    reference it is tested against) spent about 1.8 ms on them, OpenCV about 0.3 ms.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    batched = getattr(getattr(cv2, "dnn", None), "NMSBoxesBatched", None)
    if batched is None:
        return nms_numpy(boxes, scores, class_ids, iou_threshold, max_detections)
    xywh = np.empty((len(boxes), 4), dtype=np.float64)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    # score_threshold -1: the candidates are already thresholded (OpenCV keeps score > it).
    kept = batched(xywh.tolist(), scores.tolist(), class_ids.tolist(), -1.0, iou_threshold)
    return np.asarray(kept, dtype=np.int64).reshape(-1)[:max_detections]


def nms_numpy(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int = 1000,
) -> np.ndarray:
    """Class-aware greedy NMS in numpy (see `nms`).

    Boxes of different classes never suppress each other: each class is shifted by an offset
    larger than any coordinate, so one vectorised pass handles all classes.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    offset = (float(np.abs(boxes).max()) + 1.0) * class_ids.astype(np.float32)
    shifted = boxes + offset[:, None]
    x1, y1, x2, y2 = shifted[:, 0], shifted[:, 1], shifted[:, 2], shifted[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def scale_boxes(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Input-tensor pixels -> original image pixels (undo padding and resize, then clip)."""
    out = boxes.astype(np.float64, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - info.pad_x) / info.scale_x
    out[:, [1, 3]] = (out[:, [1, 3]] - info.pad_y) / info.scale_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, info.src_width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, info.src_height)
    return out


def postprocess(
    outputs: Sequence[np.ndarray],
    model: LoadedModel,
    info: LetterboxInfo,
    *,
    min_confidence: float,
    iou_threshold: float,
    max_detections: int = 1000,
) -> list[Detection]:
    """Raw backend outputs -> detections in image pixels (see the module docstring)."""
    if not outputs:
        raise DetectorError("the backend returned no output tensor")
    boxes, scores, class_ids = decode(
        outputs[0],
        model.output.layout,
        model.output.box,
        num_classes=model.num_classes,
        min_confidence=min_confidence,
    )
    if model.output.layout == "nms_free":
        order = np.argsort(-scores, kind="stable")[:max_detections]
    else:
        order = nms(boxes, scores, class_ids, iou_threshold, max_detections)
    image_boxes = scale_boxes(boxes[order], info)
    detections = []
    for (x1, y1, x2, y2), score, cid in zip(
        image_boxes.tolist(), scores[order].tolist(), class_ids[order].tolist(), strict=True
    ):
        detections.append(
            Detection(
                x1=min(x1, x2),
                y1=min(y1, y2),
                x2=max(x1, x2),
                y2=max(y1, y2),
                confidence=float(score),
                class_id=int(cid),
                class_name=model.classes[int(cid)],
            )
        )
    return detections
