"""Model directories: manifest schema, sha256 check, a user's own export without manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.detect.errors import ModelError
from edge.detect.model import infer_layout, load_model, parse_names
from tests.edge.detect.onnx_models import anchors_last, constant_head, manifest_for


def test_loads_a_valid_model_dir(anchors_model: Path):
    model = load_model(anchors_model)
    assert model.from_manifest
    assert model.classes == ("flowing", "agglutinated", "invalid")
    assert (model.input.height, model.input.width) == (64, 64)
    assert model.output.layout == "yolo_anchors_last"
    assert model.info()["name"] == "test-model" and len(model.sha256) == 64


def test_sha256_mismatch_is_refused_with_advice(anchors_model: Path):
    onnx_path = anchors_model / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match=r"corrupt or was replaced.*Re-copy"):
        load_model(anchors_model)
    assert load_model(anchors_model, verify=False).sha256 != "0" * 64


def test_missing_dir_and_missing_file(tmp_path: Path, anchors_model: Path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope")
    (anchors_model / "model.onnx").unlink()
    with pytest.raises(ModelError, match="is missing"):
        load_model(anchors_model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": []}, "classes"),
        ({"sha256": "xyz"}, "sha256"),
        ({"output": {"layout": "nms_free", "box": "cxcywh"}}, "xyxy"),
        ({"output": {"layout": "yolo_v5", "box": "xyxy"}}, "output.layout"),
        ({"input": {"height": 64, "width": 64, "letterbox": "stretch"}}, "input.letterbox"),
        ({"file": "../elsewhere.onnx"}, "plain file name"),
    ],
)
def test_manifest_schema_errors_name_the_field(anchors_model: Path, change, message):
    path = anchors_model / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(change)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=message):
        load_model(anchors_model)


def test_manifest_that_is_not_json(anchors_model: Path):
    (anchors_model / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot be read as JSON"):
        load_model(anchors_model)


def test_user_ultralytics_export_without_manifest(tmp_path: Path):
    names = str({0: "Flowing", 1: "Agglutinated"})
    constant_head(
        tmp_path / "best.onnx",
        anchors_last([(10, 10, 4, 4, 0, 0.9)], nc=2, n=50),
        height=96,
        width=128,
        metadata={"names": names},
    )
    model = load_model(tmp_path)
    assert not model.from_manifest
    assert model.classes == ("Flowing", "Agglutinated")
    assert model.output.layout == "yolo_anchors_last" and model.output.box == "cxcywh"
    assert (model.input.height, model.input.width) == (96, 128)
    assert model.input.letterbox == "center" and model.input.scale == pytest.approx(1 / 255)


def test_user_nms_free_export(tmp_path: Path):
    constant_head(
        tmp_path / "yolo26.onnx",
        np.zeros((1, 300, 6)),
        metadata={"names": str({0: "flowing", 1: "agglutinated", 2: "invalid"})},
    )
    model = load_model(tmp_path)
    assert model.output.layout == "nms_free" and model.output.box == "xyxy"


def test_user_export_without_names_or_with_two_files(tmp_path: Path):
    constant_head(tmp_path / "a.onnx", np.zeros((1, 6, 10)))
    with pytest.raises(ModelError, match="no 'names' metadata"):
        load_model(tmp_path)
    constant_head(tmp_path / "b.onnx", np.zeros((1, 6, 10)))
    with pytest.raises(ModelError, match=r"exactly one .onnx"):
        load_model(tmp_path)


def test_corrupt_onnx_without_manifest(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelError, match="corrupt or not an ONNX model"):
        load_model(tmp_path)


def test_dynamic_input_size_is_refused(tmp_path: Path):
    constant_head(
        tmp_path / "dyn.onnx",
        np.zeros((1, 6, 10)),
        metadata={"names": "['a', 'b']"},
        input_shape=[1, 3, "height", "width"],
    )
    with pytest.raises(ModelError, match="dynamic height/width"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("shape", "nc", "layout"),
    [
        ([1, 7, 5376], 3, "yolo_anchors_last"),
        ([1, 5376, 7], 3, "yolo_anchors_first"),
        ([1, 300, 6], 3, "nms_free"),
        ([1, 6, 8400], 2, "yolo_anchors_last"),
        ([1, 6, "anchors"], 2, "yolo_anchors_last"),
    ],
)
def test_layout_inference(shape, nc, layout):
    assert infer_layout(shape, nc, Path("m.onnx")) == layout


def test_layout_inference_refuses_unknown_shapes():
    with pytest.raises(ModelError, match="neither"):
        infer_layout([1, 9, 100], 3, Path("m.onnx"))
    with pytest.raises(ModelError, match="not \\[1, A, B\\]"):
        infer_layout([1, 100], 3, Path("m.onnx"))


def test_parse_names_forms():
    assert parse_names("{0: 'a', 1: 'b'}", Path("m")) == ["a", "b"]
    assert parse_names("['x', 'y']", Path("m")) == ["x", "y"]
    with pytest.raises(ModelError, match=r"not 0..1"):
        parse_names("{0: 'a', 5: 'b'}", Path("m"))
    with pytest.raises(ModelError, match="not readable"):
        parse_names("{0: a}", Path("m"))


def test_manifest_helper_matches_contract(anchors_model: Path):
    manifest = manifest_for(anchors_model / "model.onnx")
    assert set(manifest) >= {"name", "version", "file", "sha256", "classes", "input", "output"}
