"""Model variants (`manifest.variants`, e.g. int8) and the ONNX backend's `precision` setting."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.detect.base import create_detector
from edge.detect.errors import DetectorError, ModelError
from edge.detect.model import declared_variants, load_model
from edge.detect.onnx_backend import resolve_precision
from edge.detect.settings import OnnxDetectorSettings
from tests.edge.detect.onnx_models import anchors_last, constant_head, model_dir

# The fp32 graph puts its box at input (25, 25), the int8 one at (40, 24): which file ran shows
# in where the detection lands.
FP32_BOX = (25.0, 25.0, 10.0, 10.0, 0, 0.9)
INT8_BOX = (40.0, 24.0, 10.0, 10.0, 1, 0.8)


def add_int8(directory: Path, *, height: int = 64, width: int = 96) -> Path:
    path = constant_head(
        directory / "model.int8.onnx", anchors_last([INT8_BOX]), height=height, width=width
    )
    manifest = json.loads((directory / "manifest.json").read_text())
    spec = dict(manifest["input"], height=height, width=width)
    manifest["variants"] = {
        "int8": {
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "input": spec,
            "command": "python -m models.quantize",
            "metrics": {"well_accuracy": 0.99},
        },
        "fp4": {"file": "not-here.onnx", "sha256": "0" * 64},  # unknown: ignored
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def two_precisions(tmp_path: Path) -> Path:
    return add_int8(model_dir(tmp_path / "model", anchors_last([FP32_BOX])))


def test_fp32_stays_the_default_of_the_loader(two_precisions: Path):
    model = load_model(two_precisions)
    assert (model.precision, model.onnx_path.name) == ("fp32", "model.onnx")
    assert (model.input.height, model.input.width) == (64, 64)
    assert model.variants == ("int8",)
    assert declared_variants(two_precisions) == ("int8",)


def test_the_int8_variant_brings_its_file_sha_and_input(two_precisions: Path):
    model = load_model(two_precisions, precision="int8")
    assert (model.precision, model.onnx_path.name) == ("int8", "model.int8.onnx")
    assert model.sha256 == hashlib.sha256(model.onnx_path.read_bytes()).hexdigest()
    assert (model.input.height, model.input.width) == (64, 96)
    assert model.classes == load_model(two_precisions).classes


def test_a_manifest_without_variants_offers_none(anchors_model: Path):
    assert load_model(anchors_model).variants == ()
    assert declared_variants(anchors_model) == ()
    with pytest.raises(ModelError, match=r"offers no int8 variant.*precision to fp32 or auto"):
        load_model(anchors_model, precision="int8")


def test_missing_int8_file_says_what_to_do(two_precisions: Path):
    (two_precisions / "model.int8.onnx").unlink()
    with pytest.raises(ModelError, match=r"model.int8.onnx is missing.*variants.int8.*fp32"):
        load_model(two_precisions, precision="int8")
    assert load_model(two_precisions).precision == "fp32"  # the fp32 network is unaffected


def test_int8_sha256_mismatch_says_what_to_do(two_precisions: Path):
    path = two_precisions / "model.int8.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match=r"corrupt or was replaced.*models.quantize"):
        load_model(two_precisions, precision="int8")
    assert load_model(two_precisions, precision="int8", verify=False).precision == "int8"


def test_variant_schema_errors_name_the_field(two_precisions: Path):
    path = two_precisions / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["variants"]["int8"]["file"] = "../elsewhere.onnx"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"variants.int8.*plain file name"):
        load_model(two_precisions)


def test_a_variant_made_from_another_network_is_refused(two_precisions: Path):
    path = two_precisions / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["variants"]["int8"]["source_sha256"] = manifest["sha256"]
    path.write_text(json.dumps(manifest))
    assert load_model(two_precisions, precision="int8").precision == "int8"
    manifest["variants"]["int8"]["source_sha256"] = "a" * 64  # an earlier model.onnx
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"made from another model\.onnx.*Rebuild it"):
        load_model(two_precisions, precision="int8")
    assert load_model(two_precisions).precision == "fp32"


def test_no_manifest_means_no_int8(tmp_path: Path):
    constant_head(tmp_path / "export.onnx", anchors_last([FP32_BOX]), metadata={"names": "{}"})
    assert declared_variants(tmp_path) == ()
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        load_model(tmp_path, precision="int8")


@pytest.mark.parametrize(
    ("requested", "offered", "cpu_only", "chosen"),
    [
        ("auto", ("int8",), True, "int8"),
        ("auto", (), True, "fp32"),
        ("auto", ("int8",), False, "fp32"),  # CUDA keeps the network as trained
        ("fp32", ("int8",), True, "fp32"),
        ("int8", ("int8",), True, "int8"),
        ("int8", (), True, "int8"),  # the loader then explains that none is shipped
    ],
)
def test_resolve_precision(requested, offered, cpu_only, chosen):
    assert resolve_precision(requested, offered=offered, cpu_only=cpu_only) == chosen


def test_int8_on_cuda_is_refused():
    with pytest.raises(DetectorError, match="CPU provider"):
        resolve_precision("int8", offered=("int8",), cpu_only=False)


def test_precision_setting_is_validated():
    assert OnnxDetectorSettings().precision == "auto"
    with pytest.raises(ValidationError):
        OnnxDetectorSettings(precision="int4")  # type: ignore[arg-type]


def centre_of_only_box(settings: OnnxDetectorSettings) -> tuple[str, float, float]:
    image = np.zeros((64, 96, 3), dtype=np.uint8)  # fits the int8 input exactly, no padding
    with create_detector(settings) as detector:
        [det] = detector.detect(image).detections
        return detector.model.precision, (det.x1 + det.x2) / 2, (det.y1 + det.y2) / 2


def test_auto_runs_the_int8_variant_on_cpu(two_precisions: Path):
    precision, cx, cy = centre_of_only_box(
        OnnxDetectorSettings(model_dir=two_precisions, device="cpu")
    )
    assert precision == "int8"
    assert (cx, cy) == pytest.approx((40.0, 24.0))


def test_fp32_setting_runs_the_network_as_trained(two_precisions: Path):
    precision, cx, cy = centre_of_only_box(
        OnnxDetectorSettings(model_dir=two_precisions, device="cpu", precision="fp32")
    )
    assert precision == "fp32"
    # 96x64 letterboxed into 64x64: 64x43 pixels, 10 rows of padding on top.
    assert (cx, cy) == pytest.approx((25 * 1.5, (25 - 10) * 64 / 43))


def test_explicit_int8_without_variant_fails_at_start(anchors_model: Path):
    with pytest.raises(ModelError, match="offers no int8 variant"):
        create_detector(OnnxDetectorSettings(model_dir=anchors_model, precision="int8"))
