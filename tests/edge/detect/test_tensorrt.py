"""TensorRT backend and engine cache: selection, cache keys, rebuilds, fallback, messages.

TensorRT and pycuda cannot be installed here, so most tests use the stand-ins in
`fake_tensorrt` (same API shape, ONNX Runtime underneath). `test_real_tensorrt_*` are marked
`gpu` and run only where TensorRT and a GPU exist.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detect.base import create_detector
from edge.detect.errors import BackendUnavailable, DetectorError, ModelError
from edge.detect.model import load_model
from edge.detect.onnx_backend import OnnxDetector
from edge.detect.settings import OnnxDetectorSettings, TensorRTDetectorSettings
from edge.detect.tensorrt_backend import TensorRTDetector
from edge.detect.trt_engine import EngineCache, EngineKey, build_engine, ensure_engine
from tests.edge.detect import fake_tensorrt
from tests.edge.detect.fake_tensorrt import BuildStats, CudaState
from tests.edge.detect.onnx_models import anchors_last, model_dir

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def trt_settings(model_dir: Path, cache: Path, **kw) -> TensorRTDetectorSettings:
    return TensorRTDetectorSettings(model_dir=model_dir, engine_cache_dir=cache, **kw)


@pytest.fixture
def fake_trt(monkeypatch):
    return fake_tensorrt.install(monkeypatch)


# --- without TensorRT ----------------------------------------------------------------------
@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_missing_tensorrt_fails_at_start_with_advice(anchors_model, tmp_path):
    with pytest.raises(BackendUnavailable, match=r"JetPack.*'onnx' detector type"):
        create_detector(trt_settings(anchors_model, tmp_path / "engines"))


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_fallback_to_onnx_when_tensorrt_is_missing(anchors_model, tmp_path, caplog, plate_image):
    settings = trt_settings(anchors_model, tmp_path / "engines", fallback="onnx", threads=1)
    with caplog.at_level(logging.WARNING, logger="edge.detect.tensorrt_backend"):
        detector = create_detector(settings)
    assert isinstance(detector, OnnxDetector)
    assert "falling back to ONNX Runtime" in caplog.text
    assert len(detector.detect(plate_image).detections) == 1


def test_fallback_does_not_hide_a_bad_model(anchors_model, tmp_path, fake_trt):
    (anchors_model / "model.onnx").write_bytes(b"changed")
    with pytest.raises(ModelError, match="sha256"):
        create_detector(trt_settings(anchors_model, tmp_path / "e", fallback="onnx"))


def test_missing_gpu_is_reported(anchors_model, tmp_path, fake_trt):
    CudaState.fail_init = "cuInit failed: no CUDA-capable device is detected"
    with pytest.raises(BackendUnavailable, match=r"no usable CUDA GPU.*nvidia-smi"):
        create_detector(trt_settings(anchors_model, tmp_path / "e"))
    fallback = create_detector(trt_settings(anchors_model, tmp_path / "e", fallback="onnx"))
    assert isinstance(fallback, OnnxDetector)


# --- cache keys ------------------------------------------------------------------------------
def test_engine_key_changes_with_every_field():
    base = EngineKey("10.3.0", "8.7", "fp16", "a" * 64)
    variants = [
        replace(base, trt_version="10.4.0"),
        replace(base, compute_capability="7.2"),
        replace(base, precision="int8"),
        replace(base, onnx_sha256="b" * 64),
    ]
    names = {base.filename("m")} | {v.filename("m") for v in variants}
    assert len(names) == 5
    assert base.filename("m") == base.filename("m")
    assert base.filename("m").endswith(".engine") and "sm87" in base.filename("m")
    assert "/" not in base.filename("../../etc/passwd")


def test_cache_store_lookup_and_damage(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = EngineKey("10.3.0", "8.7", "fp16", "a" * 64)
    assert cache.lookup(key, "m") is None
    path = cache.store(key, "m", b"engine-bytes")
    assert cache.lookup(key, "m") == path
    path.write_bytes(b"engine-bytes, damaged")
    assert cache.lookup(key, "m") is None
    cache.store(key, "m", b"engine-bytes")
    path.with_suffix(".json").write_text("{broken")
    assert cache.lookup(key, "m") is None


def test_storing_a_new_engine_drops_superseded_ones(tmp_path):
    cache = EngineCache(tmp_path)
    old = cache.store(EngineKey("10.3.0", "8.7", "fp16", "a" * 64), "m", b"old")
    other_precision = cache.store(EngineKey("10.3.0", "8.7", "int8", "a" * 64), "m", b"int8")
    other_model = cache.store(EngineKey("10.3.0", "8.7", "fp16", "c" * 64), "m-v2", b"x")
    new = cache.store(EngineKey("10.4.0", "8.7", "fp16", "a" * 64), "m", b"new")
    assert new.exists() and not old.exists() and not old.with_suffix(".json").exists()
    assert other_precision.exists() and other_model.exists()


# --- the backend over the stand-ins -------------------------------------------------------
def test_first_start_builds_then_reuses_the_cached_engine(
    anchors_model, tmp_path, fake_trt, plate_image
):
    cache = tmp_path / "engines"
    detector = create_detector(trt_settings(anchors_model, cache))
    assert isinstance(detector, TensorRTDetector)
    assert BuildStats.builds == 1
    assert detector.engine_path.parent == cache and detector.engine_path.exists()
    got = detector.detect(plate_image).detections
    detector.close()
    assert CudaState.memory == {} and CudaState.contexts_alive == 0
    assert CudaState.context_depth == 0

    with create_detector(OnnxDetectorSettings(model_dir=anchors_model)) as onnx_detector:
        want = onnx_detector.detect(plate_image).detections
    assert got == want and len(got) == 1

    again = create_detector(trt_settings(anchors_model, cache))
    assert BuildStats.builds == 1  # cache hit
    again.close()


@pytest.mark.parametrize("change", ["trt_version", "compute_capability", "model"])
def test_upgrade_or_new_model_rebuilds_automatically(anchors_model, tmp_path, fake_trt, change):
    cache = tmp_path / "engines"
    create_detector(trt_settings(anchors_model, cache)).close()
    first = sorted(cache.glob("*.engine"))
    if change == "trt_version":
        fake_trt.__version__ = "10.7.0"  # a JetPack upgrade
    elif change == "compute_capability":
        CudaState.capability = (7, 2)  # the SD card moved to a Xavier
    else:  # a new model version: different ONNX bytes, same model name
        model_dir(anchors_model, anchors_last([(40.0, 40.0, 8.0, 8.0, 1, 0.7)]))
    with create_detector(trt_settings(anchors_model, cache)) as detector:
        assert detector.engine_path not in first
    assert BuildStats.builds == 2
    assert len(list(cache.glob("*.engine"))) == 1  # the superseded engine is gone


def test_damaged_engine_is_rebuilt(anchors_model, tmp_path, fake_trt):
    cache = tmp_path / "engines"
    create_detector(trt_settings(anchors_model, cache)).close()
    [engine] = cache.glob("*.engine")
    engine.write_bytes(b"\0" * 10)
    create_detector(trt_settings(anchors_model, cache)).close()
    assert BuildStats.builds == 2


def test_no_engine_and_no_build_says_how_to_build(anchors_model, tmp_path, fake_trt):
    settings = trt_settings(anchors_model, tmp_path / "e", build_if_missing=False)
    with pytest.raises(DetectorError, match=r"python -m models.build_engine --model"):
        create_detector(settings)
    assert CudaState.contexts_alive == 0 and CudaState.context_depth == 0


def test_failed_build_is_a_clear_error(anchors_model, tmp_path, fake_trt):
    BuildStats.fail_build = True
    with pytest.raises(DetectorError, match="could not build the engine"):
        create_detector(trt_settings(anchors_model, tmp_path / "e"))
    assert CudaState.contexts_alive == 0


def test_unparseable_onnx_names_the_parser_error(anchors_model, tmp_path, fake_trt):
    model = load_model(anchors_model)
    model = replace(model, onnx_path=tmp_path / "junk.onnx")
    model.onnx_path.write_bytes(b"junk")
    with pytest.raises(DetectorError, match=r"cannot parse junk.onnx"):
        build_engine(model, precision="fp16")


def test_int8_needs_calibration_images(anchors_model, tmp_path, fake_trt):
    with pytest.raises(DetectorError, match="calibration_images"):
        create_detector(trt_settings(anchors_model, tmp_path / "e", precision="int8"))
    empty = tmp_path / "no-images"
    empty.mkdir()
    settings = trt_settings(
        anchors_model, tmp_path / "e", precision="int8", calibration_images=empty
    )
    with pytest.raises(DetectorError, match="has none"):
        create_detector(settings)


def test_int8_calibrates_on_plate_images_and_caches_the_table(
    anchors_model, tmp_path, fake_trt, plate_image
):
    images = tmp_path / "plates"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"plate{i}.jpg"), plate_image)
    (images / "notes.txt").write_text("not an image")
    cache = tmp_path / "engines"
    settings = trt_settings(anchors_model, cache, precision="int8", calibration_images=images)
    create_detector(settings).close()
    assert BuildStats.calibration_batches == 3
    assert list(cache.glob("int8-*.cache"))
    # A rebuild (new TensorRT) reuses nothing stale, but a rebuild of the same key reads the
    # calibration table instead of recalibrating.
    for engine in cache.glob("*.engine"):
        engine.unlink()
    create_detector(settings).close()
    assert BuildStats.builds == 2 and BuildStats.calibration_batches == 3


def test_progress_reaches_the_callback(anchors_model, tmp_path, fake_trt):
    seen: list[tuple[str, int, int]] = []
    model = load_model(anchors_model)
    key = EngineKey("10.3.0", "8.7", "fp16", model.sha256)
    ensure_engine(
        model,
        EngineCache(tmp_path),
        key,
        build_if_missing=True,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    assert seen[0] == ("Building engine", 0, 3) and seen[-1] == ("Building engine", 3, 3)


def test_engine_input_shape_must_match_manifest(anchors_model, tmp_path, fake_trt):
    import json

    manifest = json.loads((anchors_model / "manifest.json").read_text())
    manifest["input"]["width"] = 96
    (anchors_model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DetectorError, match="do not belong together"):
        create_detector(trt_settings(anchors_model, tmp_path / "e"))
    assert CudaState.contexts_alive == 0


def test_infer_from_another_thread_pushes_the_context(anchors_model, tmp_path, fake_trt):
    import threading

    detector = create_detector(trt_settings(anchors_model, tmp_path / "e"))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and CudaState.context_depth == 0
    detector.close()
    detector.close()  # idempotent


# --- the real thing (Jetson / GPU machine) -------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed (no GPU here)")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_real_tensorrt_matches_onnx_runtime(tmp_path, precision):
    model_path = Path(os.environ.get("MICROPLATE_TEST_MODEL_DIR", "models/hi-plate"))
    samples = Path(os.environ.get("MICROPLATE_TEST_SAMPLES", "models/samples"))
    if not (model_path / "manifest.json").exists():
        pytest.skip(f"no model at {model_path}")
    images = sorted(samples.glob("*.jpg"))
    if not images:
        pytest.skip(f"no sample plates in {samples}")
    settings = trt_settings(
        model_path, tmp_path / "engines", precision=precision, calibration_images=samples
    )
    detector = create_detector(settings)
    reference = create_detector(OnnxDetectorSettings(model_dir=model_path, device="cpu"))
    try:
        for path in images:
            image = cv2.imread(str(path))
            got = detector.detect(image).detections
            want = reference.detect(image).detections
            # Reduced precision moves boxes slightly; the same wells must be found.
            assert abs(len(got) - len(want)) <= max(1, len(want) // 50), path.name
            centres = np.array([d.center for d in want])
            for det in got:
                nearest = np.min(np.hypot(*(centres - np.array(det.center)).T))
                assert nearest < 5.0, f"{path.name}: {det}"
    finally:
        detector.close()
        reference.close()
    # A second start hits the cache.
    create_detector(settings).close()


def test_out_of_gpu_memory_is_a_detector_error_and_can_fall_back(anchors_model, tmp_path, fake_trt):
    CudaState.free_bytes = 1000  # less than the 64x64 input buffer
    with pytest.raises(DetectorError, match=r"CudaMemoryError.*free GPU memory"):
        create_detector(trt_settings(anchors_model, tmp_path / "e"))
    assert CudaState.contexts_alive == 0 and CudaState.context_depth == 0
    fallback = create_detector(trt_settings(anchors_model, tmp_path / "e", fallback="onnx"))
    assert isinstance(fallback, OnnxDetector)


def test_runtime_failures_fail_the_run_not_the_process(anchors_model, tmp_path, fake_trt):
    detector = create_detector(trt_settings(anchors_model, tmp_path / "e"))
    CudaState.fail_execute = True
    with pytest.raises(DetectorError, match=r"inference failed.*launch failure"):
        detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
    assert CudaState.context_depth == 0
    CudaState.fail_execute = False
    assert len(detector.detect(np.zeros((64, 64, 3), dtype=np.uint8)).detections) == 1
    detector.close()
    with pytest.raises(DetectorError, match="closed"):
        detector.infer(np.zeros(detector.input_shape, dtype=np.float32))
