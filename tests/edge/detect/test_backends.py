"""The ONNX Runtime and fake backends through `create_detector`, and start-up failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edge.detect import base
from edge.detect.base import create_detector
from edge.detect.errors import BackendUnavailable, DetectorError, ModelError
from edge.detect.fake import FakeDetector
from edge.detect.onnx_backend import OnnxDetector, choose_providers
from edge.detect.settings import (
    DetectorSettings,
    FakeDetectorSettings,
    OnnxDetectorSettings,
    TensorRTDetectorSettings,
)
from tests.edge.detect.onnx_models import anchors_last, constant_head, model_dir


def test_settings_union_picks_the_backend_by_type(tmp_path: Path):
    adapter = TypeAdapter(DetectorSettings)
    assert isinstance(adapter.validate_python({"type": "onnx"}), OnnxDetectorSettings)
    trt = adapter.validate_python({"type": "tensorrt", "precision": "int8"})
    assert isinstance(trt, TensorRTDetectorSettings) and trt.precision == "int8"
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "coral"})
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "onnx", "precison": "fp16"})  # typo: unknown key
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "onnx", "min_confidence": 1.5})


def test_onnx_detector_maps_the_box_back_to_the_image(anchors_model: Path, plate_image):
    with create_detector(OnnxDetectorSettings(model_dir=anchors_model)) as detector:
        assert isinstance(detector, OnnxDetector)
        assert detector.providers == ["CPUExecutionProvider"]
        result = detector.detect(plate_image)
    assert (result.image_width, result.image_height) == (200, 100)
    [det] = result.detections
    # Input (20..30) with scale 64/200 and a 16 px top pad -> image x 62.5..93.75, y 12.5..43.75
    assert (det.x1, det.y1, det.x2, det.y2) == pytest.approx((62.5, 12.5, 93.75, 43.75))
    assert det.class_name == "flowing" and det.confidence == pytest.approx(0.9)
    assert set(result.timings_ms) == {"preprocess", "infer", "postprocess"}


def test_min_confidence_from_settings_applies(anchors_model: Path, plate_image):
    settings = OnnxDetectorSettings(model_dir=anchors_model, min_confidence=0.95)
    with create_detector(settings) as detector:
        assert detector.detect(plate_image).detections == []


def test_input_shape_mismatch_fails_at_start(tmp_path: Path):
    directory = model_dir(tmp_path / "m", anchors_last([]), height=64, width=64)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["input"]["height"] = manifest["input"]["width"] = 128
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DetectorError, match="do not belong together"):
        create_detector(OnnxDetectorSettings(model_dir=directory))


def test_corrupt_onnx_with_matching_sha_fails_at_start(tmp_path: Path):
    directory = model_dir(tmp_path / "m", anchors_last([]))
    (directory / "model.onnx").write_bytes(b"garbage" * 100)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256(b"garbage" * 100).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="corrupt or not an ONNX model"):
        create_detector(OnnxDetectorSettings(model_dir=directory))


def test_output_that_disagrees_with_the_manifest_fails_at_warm_up(tmp_path: Path):
    directory = model_dir(tmp_path / "m", anchors_last([], nc=5))  # 9 rows, manifest: 3 classes
    with pytest.raises(DetectorError, match=r"must be \[1, 7, N\]"):
        create_detector(OnnxDetectorSettings(model_dir=directory))


def test_cuda_device_without_provider_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == (
        "CUDAExecutionProvider"
    )
    assert choose_providers("cpu", ["CUDAExecutionProvider"]) == ["CPUExecutionProvider"]


def test_user_export_runs_without_manifest(tmp_path: Path, plate_image):
    constant_head(
        tmp_path / "best.onnx",
        anchors_last([(32, 32, 8, 8, 1, 0.8)], nc=2),
        metadata={"names": str({0: "Flowing", 1: "Agglutinated"})},
    )
    with create_detector(OnnxDetectorSettings(model_dir=tmp_path)) as detector:
        [det] = detector.detect(plate_image).detections
    assert det.class_name == "Agglutinated"


def test_unknown_backend_type():
    with pytest.raises(DetectorError, match="unknown detector type"):
        base.backend_class("coral")


def test_bad_image_array_is_refused(anchors_model: Path):
    with (
        create_detector(OnnxDetectorSettings(model_dir=anchors_model)) as detector,
        pytest.raises(DetectorError, match="BGR uint8"),
    ):
        detector.detect(np.zeros((10, 10), dtype=np.uint8))


def test_fake_detector_scripts_frames_through_the_shared_path():
    settings = FakeDetectorSettings(
        frames=[
            [{"x1": 10, "y1": 20, "x2": 50, "y2": 60, "class_name": "flowing"}],
            [],
        ]
    )
    detector = create_detector(settings)
    assert isinstance(detector, FakeDetector)
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    [det] = detector.detect(image).detections
    assert (det.x1, det.y1, det.x2, det.y2) == pytest.approx((10, 20, 50, 60), abs=1e-3)
    assert detector.detect(image).detections == []
    assert len(detector.detect(image).detections) == 1  # cycles
    assert detector.calls == 3


def test_fake_detector_refuses_unknown_classes():
    settings = FakeDetectorSettings(
        frames=[[{"x1": 0, "y1": 0, "x2": 5, "y2": 5, "class_name": "bubble"}]]
    )
    with pytest.raises(DetectorError, match="bubble"):
        create_detector(settings)
