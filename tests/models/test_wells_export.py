"""models.wells.export: int8 made by static quantization, and the manifest refused when int8 and
fp32 disagree. The networks here are tiny graphs built with onnx.helper (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.wells import export
from models.wells.dataset import CLASSES

SIZE = 32


def tiny_net(path: Path, seed: int) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax, the shipped op set."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.normal(0, 1.0, (len(CLASSES), 8)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(np.zeros(len(CLASSES), np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["crops", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["l"], transB=1),
        helper.make_node("Softmax", ["l"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", len(CLASSES)])],
        [w, b, fw, fb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def fake_run(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    tiny_net(folder / "model.onnx", seed)
    info = {
        "size": SIZE,
        "crop_scale": 1.0,
        "seed": seed,
        "plates": 1,
        "epochs": 1,
        "width": 8,
        "batch": 1,
        "lr": 0.1,
        "train_crops": 1,
        "train_seconds": 0.0,
        "torch": "none",
        "generator_version": "test",
        "val_accuracy": 0.5,
    }
    (folder / "run_info.json").write_text(json.dumps(info))
    return folder


@pytest.fixture(autouse=True)
def few_plates(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two plates of crops are enough to exercise the check; the real export uses 16.
    real = export.package

    def small(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("calibration_plates", 2)
        kwargs.setdefault("agreement_plates", 2)
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "package", small)


def test_export_refuses_the_manifest_when_int8_disagrees(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", seed=1)
    other = tiny_net(tmp_path / "other.onnx", seed=2)  # a different network posing as int8
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an older manifest must not survive
    with pytest.raises(export.AgreementError, match="no manifest written"):
        export.package({"tilted": run}, out, version="0.0.1", int8_override={"tilted": other})
    assert not (out / "manifest.json").exists()


def test_export_writes_the_contract_manifest_when_they_agree(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", seed=1)
    out = tmp_path / "out"
    manifest = export.package(
        {"untilted": run}, out, version="0.0.1", int8_override={"untilted": run / "model.onnx"}
    )
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["input"] == {
        "name": "crops",
        "size": SIZE,
        "crop_scale": 1.0,
        "mirror_average": False,
        "layout": "NCHW",
        "channels": "RGB",
        "range": [0, 1],
    }
    files = manifest["modes"]["untilted"]["files"]
    assert files["fp32"]["sha256"] == export.sha256_of(out / "untilted.onnx")
    assert files["int8"]["sha256"] == export.sha256_of(out / "untilted.int8.onnx")
    assert files["int8"]["source_sha256"] == files["fp32"]["sha256"]
    assert manifest["modes"]["untilted"]["classes"] == list(CLASSES)
    assert manifest["precision_agreement"]["untilted"] == 1.0


def test_static_quantization_gives_an_int8_graph_that_loads(tmp_path: Path) -> None:
    fp32 = tiny_net(tmp_path / "fp32.onnx", seed=3)
    calib = np.random.default_rng(0).random((64, 3, SIZE, SIZE), dtype=np.float32)
    info = export.quantize_int8(fp32, tmp_path / "int8.onnx", calib)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Softmax"} <= ops
    assert info["reduce_range"] and info["calibration_crops"] == 64
    probs = export.run_probs(tmp_path / "int8.onnx", calib[:5])
    assert probs.shape == (5, len(CLASSES))
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)


def test_export_with_the_mirror_average_says_so_and_measures_agreement_that_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fake_run(tmp_path / "run", seed=1)
    seen: list[bool] = []
    real_agreement = export.agreement

    def spy(fp32: Path, int8: Path, x, *, mirror_average: bool = False) -> float:  # type: ignore[no-untyped-def]
        seen.append(mirror_average)
        return real_agreement(fp32, int8, x, mirror_average=mirror_average)

    monkeypatch.setattr(export, "agreement", spy)
    manifest = export.package(
        {"untilted": run},
        tmp_path / "out",
        version="0.0.1",
        int8_override={"untilted": run / "model.onnx"},
        mirror_average=True,
        confidence_given_well=True,
    )
    assert manifest["input"]["mirror_average"] is True
    assert manifest["output"] == {"name": "probs", "confidence_given_well": True}
    assert seen == [True] and manifest["precision_agreement"]["untilted"] == 1.0
