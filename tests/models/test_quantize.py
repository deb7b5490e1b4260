"""The int8 recipe's pieces: which nodes stay float, the input resizing, the seed guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

MODEL = Path(__file__).resolve().parents[2] / "models" / "hi-plate" / "model.onnx"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="no trained model committed yet")


def test_the_decoding_tail_stays_float() -> None:
    pytest.importorskip("onnx")
    from models.quantize import float_tail

    tail = float_tail(MODEL, keep_head_outputs_float=True)
    assert "/inner/head/Concat" in tail and "/inner/head/dfl/Softmax" in tail
    assert "/Concat" in tail  # the centre-box wrapper's output concat
    assert "/inner/head/cv3.0/cv3.0.2/Conv" in tail  # class logits of the finest level
    assert not any(name.startswith(("/inner/backbone", "/inner/neck")) for name in tail)
    quantized_heads = float_tail(MODEL, keep_head_outputs_float=False)
    assert "/inner/head/cv3.0/cv3.0.2/Conv" not in quantized_heads


def test_a_rebuilt_tail_reproduces_the_exported_graph_and_resizes() -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from models.resize_input import anchor_points, resize_graph, verify_same_output

    model = onnx.load(str(MODEL))
    x = np.random.default_rng(1).random((1, 3, 512, 512), dtype=np.float32)
    assert verify_same_output(MODEL, resize_graph(model, 512, 512), x) < 1e-3
    small = resize_graph(model, 288, 384)
    dims = [d.dim_value for d in small.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 288, 384]
    points, strides = anchor_points(288, 384)
    assert points.shape == (1, 2, 36 * 48 + 18 * 24 + 9 * 12) == (1, 2, strides.shape[1])
    with pytest.raises(SystemExit, match="multiples of 32"):
        resize_graph(model, 300, 384)


@pytest.mark.parametrize("seed", ["1", "7", "1000"])
def test_calibration_never_uses_a_reserved_stream(seed: str) -> None:
    from models.quantize import main

    with pytest.raises(SystemExit):
        main(["--seed", seed, "--out", "/nonexistent/never-written.onnx"])


def test_average_pools_become_the_depthwise_convs_they_equal(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from models.quantize import pools_to_depthwise

    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2])],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 8, 6])],
    )
    path = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.random.default_rng(2).random((1, 5, 9, 7), dtype=np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert pools_to_depthwise(path) == 1
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["Conv"]
    after = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
