"""Tiny well classifiers that follow the hi-wells contract, built with `onnx.helper`.

The graph looks at a crop the way a person would at a glance: how much darker the centre disc
is than the crop's corners (`d`). A dark centre is `flowing` (a button), a paler one
`agglutinated`, no difference at all (a grey or noisy frame, the plastic between wells) is
`nowell`. Standard ops only: ReduceMean, Sub, Conv, Flatten, Gemm, Softmax, dynamic batch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = ["flowing", "agglutinated", "invalid", "nowell"]
SIZE = 32

# logits = d * SLOPE + BIAS, per class (flowing, agglutinated, invalid, nowell)
SLOPE = np.array([40.0, 10.0, 0.0, -20.0], dtype=np.float32)
BIAS = np.array([-14.0, 0.0, -5.0, 3.0], dtype=np.float32)


def _masks(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    r = np.hypot(xx - size / 2, yy - size / 2) / size
    centre = (r < 0.22).astype(np.float32)
    corners = (r > 0.47).astype(np.float32)
    weights = np.stack([centre / centre.sum(), corners / corners.sum()])
    return weights[:, None, :, :]  # [2, 1, S, S]


def _darkness_graph(
    path: Path, name: str, size: int, masks: np.ndarray, gemm_b: np.ndarray, gemm_c: np.ndarray
) -> Path:
    """logits = Gemm(conv(1 - grey, masks)): each mask averages the crop's darkness over its
    region, and the Gemm weighs the regions per class. Saved (checked) at `path`."""
    inits = [
        numpy_helper.from_array(np.ones((), np.float32), "one"),
        numpy_helper.from_array(masks, "masks"),
        numpy_helper.from_array(gemm_b, "gemm_b"),
        numpy_helper.from_array(gemm_c, "gemm_c"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["crops"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["one", "grey"], ["dark"]),
        helper.make_node("Conv", ["dark", "masks"], ["feat4"]),
        helper.make_node("Flatten", ["feat4"], ["feat"], axis=1),
        helper.make_node("Gemm", ["feat", "gemm_b", "gemm_c"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(CLASSES)])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def disc_classifier(
    path: Path, *, size: int = SIZE, swap: bool = False, name: str = "disc"
) -> Path:
    """The classifier graph; `swap` exchanges flowing and agglutinated (a disagreeing copy)."""
    slope, bias = SLOPE.copy(), BIAS.copy()
    if swap:
        slope[[0, 1]], bias[[0, 1]] = slope[[1, 0]], bias[[1, 0]]
    # Gemm: [N, 2] x [2, 4]: +d from the centre feature, -d from the corner feature.
    b = np.stack([slope, -slope]).astype(np.float32)
    return _darkness_graph(path, name, size, _masks(size), b, bias)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wells_dir(
    folder: Path,
    *,
    size: int = SIZE,
    int8_swapped: bool = False,
    untilted_same: bool = True,
    **overrides: Any,
) -> Path:
    """A `hi-wells`-style folder: fp32 + int8 files per mode and the manifest."""
    fp32 = disc_classifier(folder / "tilted.onnx", size=size)
    int8 = disc_classifier(
        folder / "tilted.int8.onnx", size=size, swap=int8_swapped, name="disc_int8"
    )
    files = {
        "fp32": {"path": fp32.name, "sha256": sha(fp32)},
        "int8": {"path": int8.name, "sha256": sha(int8), "source_sha256": sha(fp32)},
    }
    modes: dict[str, Any] = {"tilted": {"classes": list(CLASSES), "files": files}}
    if untilted_same:
        modes["untilted"] = {"classes": list(CLASSES), "files": files}
    else:
        un = disc_classifier(folder / "untilted.onnx", size=size, swap=True, name="untilted")
        modes["untilted"] = {
            "classes": list(CLASSES),
            "files": {"fp32": {"path": un.name, "sha256": sha(un)}},
        }
    manifest: dict[str, Any] = {
        "name": "test-wells",
        "version": "0.0.1",
        "task": "well-classification",
        "input": {
            "name": "crops",
            "size": size,
            "crop_scale": 1.0,
            "layout": "NCHW",
            "channels": "RGB",
            "range": [0, 1],
        },
        "output": {"name": "probs"},
        "modes": modes,
        "precision_agreement": {"tilted": 1.0, "untilted": 1.0},
        **overrides,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def lopsided_classifier(path: Path, *, size: int = SIZE, nowell_bias: float = -2.0) -> Path:
    """A graph that is not mirror-symmetric: the left half's darkness votes `flowing`, the
    right half's `agglutinated` (so a crop and its mirror image get different probabilities)."""
    half = np.zeros((2, 1, size, size), np.float32)
    half[0, 0, :, : size // 2] = 1.0 / (size * size / 2)
    half[1, 0, :, size // 2 :] = 1.0 / (size * size / 2)
    b = np.array([[8.0, 0.0, 0.0, 0.0], [0.0, 8.0, 0.0, 0.0]], np.float32)
    bias = np.array([0.0, 0.0, -2.0, nowell_bias], np.float32)
    return _darkness_graph(path, "lopsided", size, half, b, bias)


def lopsided_wells_dir(
    folder: Path,
    *,
    mirror_average: bool,
    confidence_given_well: bool = False,
    nowell_bias: float = -2.0,
) -> Path:
    """A `hi-wells`-style folder whose files (both modes, fp32 and "int8") are the lopsided
    graph, with `input.mirror_average` and `output.confidence_given_well` as given."""
    fp32 = lopsided_classifier(folder / "lopsided.onnx", nowell_bias=nowell_bias)
    files = {
        "fp32": {"path": fp32.name, "sha256": sha(fp32)},
        "int8": {"path": fp32.name, "sha256": sha(fp32), "source_sha256": sha(fp32)},
    }
    wells_dir(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["mirror_average"] = mirror_average
    manifest["output"]["confidence_given_well"] = confidence_given_well
    for mode in ("tilted", "untilted"):
        manifest["modes"][mode]["files"] = files
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder
