"""`python -m models.build_engine` over the TensorRT stand-ins (the real run is a gpu check)."""

from __future__ import annotations

import importlib.util

import pytest

from models import build_engine
from tests.edge.detect import fake_tensorrt
from tests.edge.detect.fake_tensorrt import BuildStats, CudaState


def test_builds_then_reports_up_to_date(anchors_model, tmp_path, monkeypatch, capsys):
    fake_tensorrt.install(monkeypatch)
    argv = ["--model", str(anchors_model), "--cache-dir", str(tmp_path / "engines")]
    assert build_engine.main(argv) == 0
    out = capsys.readouterr().out
    assert "building fp16 engine for test-model" in out and "built " in out
    assert BuildStats.builds == 1 and BuildStats.phases
    assert CudaState.contexts_alive == 0 and CudaState.context_depth == 0
    assert build_engine.main(argv) == 0
    assert "up to date" in capsys.readouterr().out and BuildStats.builds == 1
    assert build_engine.main([*argv, "--force"]) == 0
    assert BuildStats.builds == 2
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 1


def test_int8_without_images_is_a_clear_error(anchors_model, tmp_path, monkeypatch, capsys):
    fake_tensorrt.install(monkeypatch)
    argv = ["--model", str(anchors_model), "--cache-dir", str(tmp_path), "--precision", "int8"]
    assert build_engine.main(argv) == 2
    err = capsys.readouterr().err
    assert "needs calibration_images" in err and "Traceback" not in err


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_without_tensorrt_says_what_to_install(anchors_model, tmp_path, capsys):
    assert build_engine.main(["--model", str(anchors_model), "--cache-dir", str(tmp_path)]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


def test_bad_model_dir(tmp_path, capsys):
    assert build_engine.main(["--model", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
