"""Give the shipped graph another static input size, same weights.

    python -m models.resize_input --model models/hi-plate/model.onnx --height 384 --width 512 \
        --out /tmp/model-512x384.onnx

The network is convolutional up to the three per-level outputs of its head; only the decoding
tail (anchor points, strides, the DFL reshape) is baked for 512 x 512. This cuts the graph at the
head's three per-level concats and appends a freshly built tail for the new size, with the same
operations (DFL softmax over 16 bins, distances around the anchor points, times the stride,
centre boxes, sigmoid scores). `verify_same_output` checks the rebuilt tail against the original
graph at the original size, so the arithmetic is the exported one.

Why: a plate photo is landscape (4:3 to 16:9), so a square input spends a quarter to almost half
of its work on letterbox padding; and a smaller input is cheaper on a 2-core CPU. Whether a
smaller scale still reads every well is for `models.evaluate` to say, not for this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

STRIDES = (8, 16, 32)
REG_MAX = 16
HEAD_CONCATS = ("/inner/head/Concat", "/inner/head/Concat_1", "/inner/head/Concat_2")


def anchor_points(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(points [1, 2, A] in grid cells, strides [1, A]) for the three levels, row-major."""
    points, strides = [], []
    for stride in STRIDES:
        h, w = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(h * w, stride))
    return (
        np.concatenate(points, axis=1)[None].astype(np.float32),
        np.concatenate(strides)[None].astype(np.float32),
    )


def resize_graph(model: Any, height: int, width: int) -> Any:
    """A copy of `model` (onnx.ModelProto) taking `[1, 3, height, width]`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if height % 32 or width % 32:
        raise SystemExit(f"input {width}x{height}: both sides must be multiples of 32")
    graph = model.graph
    names = [n.name for n in graph.node]
    missing = [c for c in HEAD_CONCATS if c not in names]
    if missing:
        raise SystemExit(f"the graph has no {missing}: this script knows the LibreYOLO9 export")
    cut = max(names.index(c) for c in HEAD_CONCATS)
    heads = [graph.node[names.index(c)].output[0] for c in HEAD_CONCATS]
    nc_plus_box = None
    body = list(graph.node[: cut + 1])
    # Drop everything of the old tail; keep the body's initializers only.
    used = {i for n in body for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    points, strides = anchor_points(height, width)
    num_anchors = points.shape[2]
    out_channels = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    num_classes = out_channels - 4
    nc_plus_box = 4 * REG_MAX + num_classes

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    tail = []
    flat = []
    for i, head in enumerate(heads):
        out = f"/tail/flat{i}"
        tail.append(
            helper.make_node(
                "Reshape",
                [head, const(f"/tail/shape{i}", np.array([1, nc_plus_box, -1], np.int64))],
                [out],
                name=out,
            )
        )
        flat.append(out)
    tail += [
        helper.make_node("Concat", flat, ["/tail/all"], name="/tail/all", axis=2),
        helper.make_node(
            "Split",
            ["/tail/all", const("/tail/split", np.array([4 * REG_MAX, num_classes], np.int64))],
            ["/tail/dist", "/tail/logits"],
            name="/tail/split",
            axis=1,
        ),
        helper.make_node(
            "Reshape",
            [
                "/tail/dist",
                const("/tail/dfl_shape", np.array([1, 4, REG_MAX, num_anchors], np.int64)),
            ],
            ["/tail/dfl_in"],
            name="/tail/dfl_reshape",
        ),
        helper.make_node("Softmax", ["/tail/dfl_in"], ["/tail/dfl_soft"], name="/tail/sm", axis=2),
        helper.make_node(
            "Mul",
            [
                "/tail/dfl_soft",
                const("/tail/bins", np.arange(REG_MAX, dtype=np.float32).reshape(1, 1, -1, 1)),
            ],
            ["/tail/dfl_w"],
            name="/tail/dfl_mul",
        ),
        helper.make_node(
            "ReduceSum",
            ["/tail/dfl_w", const("/tail/axis2", np.array([2], np.int64))],
            ["/tail/ltrb"],
            name="/tail/dfl_sum",
            keepdims=0,
        ),
        helper.make_node(
            "Split",
            ["/tail/ltrb", const("/tail/split2", np.array([2, 2], np.int64))],
            ["/tail/lt", "/tail/rb"],
            name="/tail/split_ltrb",
            axis=1,
        ),
        helper.make_node(
            "Sub", [const("/tail/points", points), "/tail/lt"], ["/tail/xy1"], name="/tail/xy1"
        ),
        helper.make_node("Add", ["/tail/points", "/tail/rb"], ["/tail/xy2"], name="/tail/xy2"),
        helper.make_node("Add", ["/tail/xy1", "/tail/xy2"], ["/tail/sum"], name="/tail/sum"),
        helper.make_node(
            "Mul",
            ["/tail/sum", const("/tail/half", np.array(0.5, np.float32))],
            ["/tail/c"],
            name="/tail/c",
        ),
        helper.make_node("Sub", ["/tail/xy2", "/tail/xy1"], ["/tail/wh"], name="/tail/wh"),
        helper.make_node(
            "Concat", ["/tail/c", "/tail/wh"], ["/tail/cxcywh_cells"], name="/tail/cat", axis=1
        ),
        helper.make_node(
            "Mul",
            ["/tail/cxcywh_cells", const("/tail/strides", strides)],
            ["/tail/cxcywh"],
            name="/tail/px",
        ),
        helper.make_node("Sigmoid", ["/tail/logits"], ["/tail/scores"], name="/tail/sigmoid"),
        helper.make_node(
            "Concat",
            ["/tail/cxcywh", "/tail/scores"],
            [graph.output[0].name],
            name="/tail/out",
            axis=1,
        ),
    ]
    inp = graph.input[0]
    new_graph = helper.make_graph(
        body + tail,
        graph.name,
        [
            helper.make_tensor_value_info(
                inp.name, inp.type.tensor_type.elem_type, [1, 3, height, width]
            )
        ],
        [
            helper.make_tensor_value_info(
                graph.output[0].name, TensorProto.FLOAT, [1, out_channels, num_anchors]
            )
        ],
        initializer=inits,
    )
    new = helper.make_model(new_graph, opset_imports=model.opset_import)
    new.ir_version = model.ir_version
    for prop in model.metadata_props:
        entry = new.metadata_props.add()
        entry.key = prop.key
        entry.value = f"[{height}, {width}]" if prop.key == "imgsz" else prop.value
    onnx.checker.check_model(new)
    return new


def verify_same_output(original: Path, rebuilt: Any, tensor: np.ndarray) -> float:
    """Largest absolute difference between the original graph and `rebuilt` on `tensor`."""
    import onnxruntime as ort

    a = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(rebuilt.SerializeToString(), providers=["CPUExecutionProvider"])
    name = a.get_inputs()[0].name
    return float(np.abs(a.run(None, {name: tensor})[0] - b.run(None, {name: tensor})[0]).max())


def main(argv: list[str] | None = None) -> int:
    import onnx

    parser = argparse.ArgumentParser(prog="python -m models.resize_input", description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/hi-plate/model.onnx"))
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model = onnx.load(str(args.model))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    same = resize_graph(model, dims[2], dims[3])
    rng = np.random.default_rng(0)
    diff = verify_same_output(args.model, same, rng.random((1, 3, dims[2], dims[3]), np.float32))
    if diff > 1e-3:
        raise SystemExit(f"the rebuilt tail differs from the original by {diff:g}; not writing")
    print(f"rebuilt tail matches the original at {dims[3]}x{dims[2]} (max diff {diff:.2g})")
    onnx.save(resize_graph(model, args.height, args.width), str(args.out))
    print(f"wrote {args.out} ({args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
