"""Tiny ONNX graphs that emit known tensors, so detection tests never need the trained model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = ["flowing", "agglutinated", "invalid"]


def constant_head(
    path: Path,
    output: np.ndarray,
    *,
    height: int = 64,
    width: int = 64,
    input_name: str = "images",
    metadata: dict[str, str] | None = None,
    input_shape: list[Any] | None = None,
) -> Path:
    """An ONNX model whose single output is `output` whatever the input (it still reads it)."""
    out = np.asarray(output, dtype=np.float32)
    const = numpy_helper.from_array(out, name="head_value")
    zero = numpy_helper.from_array(np.zeros((), dtype=np.float32), name="zero")
    nodes = [
        # mean(images) * 0 + head: the input is consumed, so runtimes keep and check it.
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["head_value", "nothing"], ["output0"]),
    ]
    shape = input_shape or [1, 3, height, width]
    graph = helper.make_graph(
        nodes,
        "constant_head",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))],
        initializer=[const, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def manifest_for(
    onnx_path: Path,
    *,
    classes: list[str] | None = None,
    layout: str = "yolo_anchors_last",
    box: str = "cxcywh",
    height: int = 64,
    width: int = 64,
    letterbox: str = "center",
    **overrides: Any,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "name": "test-model",
        "version": "0.0.1",
        "file": onnx_path.name,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "classes": classes or list(CLASSES),
        "input": {
            "name": "images",
            "height": height,
            "width": width,
            "channels": "RGB",
            "scale": 1 / 255,
            "letterbox": letterbox,
            "pad_value": 114,
        },
        "output": {"layout": layout, "box": box},
        "trainer": {"name": "hand-made", "version": "0", "licence": "MIT", "command": "tests"},
        "metrics": {},
    }
    manifest.update(overrides)
    return manifest


def model_dir(
    directory: Path,
    output: np.ndarray,
    *,
    classes: list[str] | None = None,
    layout: str = "yolo_anchors_last",
    box: str = "cxcywh",
    height: int = 64,
    width: int = 64,
    letterbox: str = "center",
    **overrides: Any,
) -> Path:
    """A complete model directory (model.onnx + manifest.json) emitting `output`."""
    onnx_path = constant_head(directory / "model.onnx", output, height=height, width=width)
    manifest = manifest_for(
        onnx_path,
        classes=classes,
        layout=layout,
        box=box,
        height=height,
        width=width,
        letterbox=letterbox,
        **overrides,
    )
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def anchors_last(
    rows: list[tuple[float, float, float, float, int, float]], nc: int = 3, n: int = 16
) -> np.ndarray:
    """[1, 4+nc, n] from (b0, b1, b2, b3, class_id, score) rows; other anchors score 0."""
    out = np.zeros((1, 4 + nc, n), dtype=np.float32)
    for i, (b0, b1, b2, b3, cid, score) in enumerate(rows):
        out[0, :4, i] = (b0, b1, b2, b3)
        out[0, 4 + cid, i] = score
    return out
