"""Shared pre/post-processing on hand-made tensors: every layout, both letterbox modes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.detect.errors import DetectorError
from edge.detect.model import InputSpec, LoadedModel, OutputSpec
from edge.detect.processing import (
    LetterboxInfo,
    cxcywh_to_xyxy,
    decode,
    letterbox,
    nms,
    nms_numpy,
    postprocess,
    scale_boxes,
    to_tensor,
)

CLASSES = ("flowing", "agglutinated", "invalid")


def make_model(layout: str, box: str, mode: str = "center", size: int = 64) -> LoadedModel:
    return LoadedModel(
        directory=None,  # type: ignore[arg-type]
        onnx_path=None,
        name="hand-made",
        version="0",
        sha256="0" * 64,
        classes=CLASSES,
        input=InputSpec(height=size, width=size, letterbox=mode),  # type: ignore[arg-type]
        output=OutputSpec(layout=layout, box=box),  # type: ignore[arg-type]
        from_manifest=True,
    )


def to_input(box: tuple[float, float, float, float], info: LetterboxInfo) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array(
        [
            x1 * info.scale_x + info.pad_x,
            y1 * info.scale_y + info.pad_y,
            x2 * info.scale_x + info.pad_x,
            y2 * info.scale_y + info.pad_y,
        ]
    )


def head(layout: str, box_fmt: str, boxes: list[np.ndarray], cids: list[int], scores: list[float]):
    n = 20
    if layout == "nms_free":
        out = np.zeros((1, n, 6), dtype=np.float32)
        for i, (b, c, s) in enumerate(zip(boxes, cids, scores, strict=True)):
            out[0, i] = (*b, s, c)
        return out
    rows = np.zeros((n, 4 + len(CLASSES)), dtype=np.float32)
    for i, (b, c, s) in enumerate(zip(boxes, cids, scores, strict=True)):
        if box_fmt == "cxcywh":
            b = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]])
        rows[i, :4] = b
        rows[i, 4 + c] = s
        rows[i, 4 + (c + 1) % 3] = s / 3  # a lower runner-up score must not win
    return rows.T[None] if layout == "yolo_anchors_last" else rows[None]


@pytest.mark.parametrize("mode", ["center", "topleft"])
@pytest.mark.parametrize(
    ("layout", "box_fmt"),
    [
        ("yolo_anchors_last", "cxcywh"),
        ("yolo_anchors_last", "xyxy"),
        ("yolo_anchors_first", "cxcywh"),
        ("yolo_anchors_first", "xyxy"),
        ("nms_free", "xyxy"),
    ],
)
@pytest.mark.parametrize(("w", "h"), [(200, 100), (90, 150), (64, 64)])
def test_boxes_map_back_to_where_they_were_placed(mode, layout, box_fmt, w, h):
    image = np.zeros((h, w, 3), dtype=np.uint8)
    model = make_model(layout, box_fmt, mode)
    _, info = letterbox(image, 64, 64, mode=mode)
    placed = [(10.0, 20.0, 30.0, 45.0), (w - 25.0, h - 30.0, w - 5.0, h - 2.0)]
    out = head(layout, box_fmt, [to_input(b, info) for b in placed], [0, 2], [0.9, 0.8])
    dets = postprocess([out], model, info, min_confidence=0.25, iou_threshold=0.5)
    assert [d.class_name for d in dets] == ["flowing", "invalid"]
    assert [d.class_id for d in dets] == [0, 2]
    assert [d.confidence for d in dets] == pytest.approx([0.9, 0.8])
    for det, want in zip(dets, placed, strict=True):
        assert (det.x1, det.y1, det.x2, det.y2) == pytest.approx(want, abs=1e-3)


def test_center_letterbox_pads_both_sides_equally():
    image = np.full((100, 200, 3), 7, dtype=np.uint8)
    out, info = letterbox(image, 64, 64, mode="center", pad_value=114)
    assert out.shape == (64, 64, 3)
    assert (info.pad_x, info.pad_y) == (0, 16)
    assert info.scale_x == pytest.approx(64 / 200) and info.scale_y == pytest.approx(32 / 100)
    assert (out[:16] == 114).all() and (out[48:] == 114).all()
    assert (out[16:48] == 7).all()


def test_topleft_letterbox_pads_right_and_bottom():
    image = np.full((100, 200, 3), 7, dtype=np.uint8)
    out, info = letterbox(image, 64, 64, mode="topleft")
    assert (info.pad_x, info.pad_y) == (0, 0)
    assert (out[:32] == 7).all() and (out[32:] == 114).all()


def test_to_tensor_is_nchw_rgb_scaled():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 255  # B, G, R
    t = to_tensor(image, channels="RGB", scale=1 / 255)
    assert t.shape == (1, 3, 2, 3) and t.dtype == np.float32 and t.flags.c_contiguous
    assert t[0, 0, 0, 0] == pytest.approx(1.0)  # R first
    assert t[0, 2, 0, 0] == pytest.approx(10 / 255)
    bgr = to_tensor(image, channels="BGR", scale=1.0)
    assert bgr[0, 0, 0, 0] == 10


def test_cxcywh_to_xyxy():
    got = cxcywh_to_xyxy(np.array([[10.0, 20.0, 4.0, 6.0]]))
    assert got.tolist() == [[8.0, 17.0, 12.0, 23.0]]


@pytest.mark.parametrize("impl", [nms, nms_numpy])
def test_nms_is_class_aware(impl):
    nms = impl
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    same = np.array([0, 0, 0, 0])
    assert nms(boxes, scores, same, 0.5).tolist() == [0, 3]
    mixed = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, mixed, 0.5).tolist() == [0, 2, 3]
    # A looser threshold keeps the overlapping box (IoU 81/119 = 0.68).
    assert nms(boxes, scores, same, 0.7).tolist() == [0, 1, 3]
    assert nms(boxes, scores, same, 0.5, max_detections=1).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), 0.5).size == 0


@pytest.mark.parametrize("seed", range(40))
def test_nms_keeps_exactly_what_the_numpy_reference_keeps(seed: int):
    """OpenCV's loop and the numpy one agree, ties and zero scores included."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    xy = rng.random((n, 2), dtype=np.float32) * 200
    boxes = np.c_[xy, xy + rng.random((n, 2), dtype=np.float32) * 40 + 1]
    scores = (rng.integers(0, 11, n) / 10).astype(np.float32)  # many ties, some 0.0
    class_ids = rng.integers(0, 3, n)
    for iou in (0.3, 0.5, 0.7):
        want = nms_numpy(boxes, scores, class_ids, iou, max_detections=50)
        assert nms(boxes, scores, class_ids, iou, max_detections=50).tolist() == want.tolist()


def test_decode_drops_low_scores_and_picks_best_class():
    out = np.zeros((1, 7, 3), dtype=np.float32)
    out[0, :4, 0] = (10, 10, 4, 4)
    out[0, 4:, 0] = (0.1, 0.6, 0.3)
    out[0, :4, 1] = (20, 20, 4, 4)
    out[0, 4:, 1] = (0.2, 0.1, 0.05)
    boxes, scores, cids = decode(
        out, "yolo_anchors_last", "cxcywh", num_classes=3, min_confidence=0.25
    )
    assert cids.tolist() == [1] and scores.tolist() == pytest.approx([0.6])
    assert boxes.tolist() == [[8, 8, 12, 12]]


@pytest.mark.parametrize(
    ("layout", "shape"),
    [
        ("yolo_anchors_last", (1, 8, 10)),
        ("yolo_anchors_first", (1, 10, 8)),
        ("nms_free", (1, 10, 7)),
        ("yolo_anchors_last", (2, 7, 10)),
        ("yolo_anchors_last", (7,)),
    ],
)
def test_decode_refuses_a_tensor_that_does_not_fit_the_layout(layout, shape):
    with pytest.raises(DetectorError, match="output"):
        decode(np.zeros(shape), layout, "xyxy", num_classes=3, min_confidence=0.25)


def test_nms_free_class_ids_outside_the_manifest_are_refused():
    out = np.array([[[0, 0, 5, 5, 0.9, 7]]], dtype=np.float32)
    with pytest.raises(DetectorError, match="class ids"):
        decode(out, "nms_free", "xyxy", num_classes=3, min_confidence=0.25)


def test_scale_boxes_clips_to_the_image():
    info = LetterboxInfo(src_width=100, src_height=50, scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=7)
    got = scale_boxes(np.array([[-4.0, 0.0, 60.0, 40.0]]), info)
    assert got.tolist() == [[0.0, 0.0, 100.0, 50.0]]


def test_postprocess_sorts_by_confidence_and_applies_nms():
    model = make_model("yolo_anchors_first", "xyxy", "topleft")
    info = LetterboxInfo(src_width=64, src_height=64, scale_x=1, scale_y=1, pad_x=0, pad_y=0)
    out = head(
        "yolo_anchors_first",
        "xyxy",
        [np.array(b, float) for b in ([0, 0, 10, 10], [0, 0, 10, 10.5], [30, 30, 40, 40])],
        [1, 1, 0],
        [0.5, 0.7, 0.6],
    )
    dets = postprocess([out], model, info, min_confidence=0.25, iou_threshold=0.5)
    assert [(d.class_name, round(d.confidence, 2)) for d in dets] == [
        ("agglutinated", 0.7),
        ("flowing", 0.6),
    ]
    with pytest.raises(DetectorError, match="no output"):
        postprocess([], model, info, min_confidence=0.25, iou_threshold=0.5)


@settings(max_examples=60, deadline=None)
@given(
    w=st.integers(32, 3000),
    h=st.integers(32, 3000),
    size=st.sampled_from([64, 320, 512, 640]),
    mode=st.sampled_from(["center", "topleft"]),
    fx=st.floats(0.0, 0.8),
    fy=st.floats(0.0, 0.8),
    fw=st.floats(0.05, 0.2),
    fh=st.floats(0.05, 0.2),
)
def test_round_trip_property(w, h, size, mode, fx, fy, fw, fh):
    info = letterbox_info(w, h, size, mode)
    want = (fx * w, fy * h, (fx + fw) * w, (fy + fh) * h)
    model = make_model("yolo_anchors_last", "xyxy", mode, size)
    out = head("yolo_anchors_last", "xyxy", [to_input(want, info)], [1], [0.7])
    [det] = postprocess([out], model, info, min_confidence=0.25, iou_threshold=0.5)
    # float32 tensors: sub-pixel agreement is the most a real head could give anyway.
    assert (det.x1, det.y1, det.x2, det.y2) == pytest.approx(
        want, abs=1e-3 * max(1.0, max(w, h) / size)
    )


def letterbox_info(w: int, h: int, size: int, mode: str) -> LetterboxInfo:
    _, info = letterbox(np.zeros((h, w, 3), dtype=np.uint8), size, size, mode=mode)
    assert 0 <= info.pad_x <= size and 0 <= info.pad_y <= size
    assert round(w * info.scale_x) <= size and round(h * info.scale_y) <= size
    return info
