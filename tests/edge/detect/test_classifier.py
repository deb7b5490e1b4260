"""The well classifier: manifest checks, calls from crops, thresholds, both backends."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from edge.detect.classifier import calls_from_probs, create_classifier
from edge.detect.errors import DetectorError, ModelError
from edge.detect.settings import (
    FakeDetectorSettings,
    OnnxDetectorSettings,
    TensorRTDetectorSettings,
)
from edge.detect.tensor_backends import TensorRTBatchRunner
from edge.detect.wells_model import is_wells_model, load_wells_model
from tests.edge import plates
from tests.edge.detect import fake_tensorrt
from tests.edge.detect.fake_tensorrt import BuildStats, CudaState
from tests.edge.detect.wells_models import CLASSES, wells_dir

ENDPOINTS = [0, 2, 4, 6, 8, 10, 12, 5]
SYMBOL = {"flowing": "+", "agglutinated": "-", "invalid": "x", "unread": "?"}


def grid_for(image: np.ndarray) -> CalibrationGrid:
    return CalibrationGrid.uniform(image.shape[1], image.shape[0], PLATE_96, plates.MARGIN)


def endpoints(calls) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    for r in "ABCDEFGH":
        states = [calls[f"{r}{c}"].state for c in range(1, 13)]
        out.append(sum(1 for s in states if s == "flowing"))
    return out


@pytest.fixture
def wells(tmp_path: Path) -> Path:
    return wells_dir(tmp_path / "hi-wells")


def test_manifest_is_recognised_and_loaded(wells: Path) -> None:
    assert is_wells_model(wells)
    model = load_wells_model(wells)
    assert (model.size, model.crop_scale, model.input_name) == (32, 1.0, "crops")
    assert model.precisions("tilted") == ("fp32", "int8")
    assert model.network("untilted", "int8").classes == tuple(CLASSES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(task="detection"), "task"),
        (lambda m: m["modes"].pop("untilted"), "modes lacks"),
        (lambda m: m["modes"]["tilted"].update(classes=["flowing", "tear"]), "not among"),
        (lambda m: m["input"].update(range=[0, 255]), "range"),
        (lambda m: m["modes"]["tilted"]["files"]["fp32"].update(path="../x.onnx"), "plain file"),
    ],
)
def test_bad_manifests_are_refused_with_the_field(wells: Path, change, message) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((wells / "manifest.json").read_text())
    change(manifest)
    (wells / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=message):
        load_wells_model(wells)


def test_changed_file_and_stale_int8_are_refused(wells: Path) -> None:
    manifest = json.loads((wells / "manifest.json").read_text())
    manifest["modes"]["tilted"]["files"]["int8"]["source_sha256"] = "b" * 64
    (wells / "manifest.json").write_text(json.dumps(manifest))
    model = load_wells_model(wells)
    with pytest.raises(ModelError, match="made from another fp32 file"):
        model.network("tilted", "int8")
    (wells / "tilted.onnx").write_bytes(b"changed")
    with pytest.raises(ModelError, match="corrupt or was replaced"):
        model.network("tilted", "fp32")
    (wells / "tilted.onnx").unlink()
    with pytest.raises(ModelError, match="is missing"):
        model.network("tilted", "fp32")


def test_plate_is_read_well_by_well(wells: Path) -> None:
    classifier = create_classifier(OnnxDetectorSettings(wells_model_dir=wells, device="cpu"))
    assert classifier is not None and classifier.precision == "int8"  # auto on the CPU
    image = plates.plate_image(ENDPOINTS)
    result = classifier.classify(image, grid_for(image), mode="tilted", min_confidence=0.5)
    assert endpoints(result.well_calls) == ENDPOINTS
    assert result.nowell == 0 and result.agreement is None
    a1 = result.well_calls["A1"]
    assert a1.state == "agglutinated" and a1.class_name == "agglutinated" and a1.box is not None
    assert 0.5 <= a1.confidence <= 1.0
    # A frame decoded at half size reads the same through the same full-size grid.
    small = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2))
    again = classifier.classify(small, grid_for(image), mode="tilted", min_confidence=0.5)
    assert endpoints(again.well_calls) == ENDPOINTS
    classifier.close()


def test_threshold_and_nowell_make_unread_wells() -> None:
    grid = CalibrationGrid.uniform(120, 80, PLATE_96)
    probs = np.zeros((96, 4), dtype=np.float32)
    probs[:, 0] = 1.0
    probs[1] = [0.4, 0.3, 0.2, 0.1]  # below the threshold
    probs[2] = [0.0, 0.1, 0.0, 0.9]  # no well here
    calls, nowell = calls_from_probs(probs, tuple(CLASSES), grid, 0.5)
    assert nowell == 1
    assert calls["A1"].state == "flowing" and calls["A1"].flags == ()
    assert calls["A2"].state == "unread" and calls["A2"].flags == ("low_confidence",)
    assert calls["A2"].class_name == "flowing" and calls["A2"].confidence == pytest.approx(0.4)
    assert calls["A3"].state == "unread" and calls["A3"].flags == ("no_well",)


def test_no_classifier_without_a_folder(tmp_path: Path, wells: Path) -> None:
    assert create_classifier(FakeDetectorSettings()) is None
    assert create_classifier(OnnxDetectorSettings(wells_model_dir=None)) is None
    with pytest.raises(ModelError, match="does not exist"):
        create_classifier(OnnxDetectorSettings(wells_model_dir=tmp_path / "nowhere"))


def test_cross_check_needs_int8_and_reports_agreement(tmp_path: Path) -> None:
    folder = wells_dir(tmp_path / "w", int8_swapped=True)
    settings = OnnxDetectorSettings(
        wells_model_dir=folder, device="cpu", review={"cross_check_precision": True}
    )
    classifier = create_classifier(settings)
    assert classifier is not None and classifier.cross_precision == "fp32"
    image = plates.plate_image(ENDPOINTS)
    result = classifier.classify(image, grid_for(image), mode="tilted", min_confidence=0.5)
    # The swapped copy calls flowing where the other says agglutinated: most wells differ.
    assert result.agreement is not None and result.agreement < 0.1
    classifier.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["modes"]["untilted"]["files"]["int8"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DetectorError, match="cross_check_precision needs"):
        create_classifier(settings)


def test_a_class_list_that_does_not_fit_the_output_is_refused_at_start(tmp_path: Path) -> None:
    folder = wells_dir(tmp_path / "w")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["modes"]["tilted"]["classes"] = ["flowing", "agglutinated", "nowell"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="3 classes"):
        create_classifier(OnnxDetectorSettings(wells_model_dir=folder, device="cpu"))


# --- TensorRT, over the API stand-ins --------------------------------------------------------
@pytest.fixture
def fake_trt(monkeypatch):  # type: ignore[no-untyped-def]
    return fake_tensorrt.install(monkeypatch)


def test_tensorrt_builds_a_dynamic_batch_engine_and_reuses_it(
    wells: Path, tmp_path: Path, fake_trt
) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "engines"
    settings = TensorRTDetectorSettings(wells_model_dir=wells, engine_cache_dir=cache)
    classifier = create_classifier(settings)
    assert classifier is not None and classifier.backend == "tensorrt"
    assert classifier.precision == "fp32"  # the fp16 engine is built from the fp32 file
    assert BuildStats.builds == 1  # one file serves both modes: one engine
    [profile] = BuildStats.profiles
    assert [list(s) for s in profile["crops"]] == [
        [1, 3, 32, 32],
        [96, 3, 32, 32],
        [384, 3, 32, 32],
    ]
    image = plates.plate_image(ENDPOINTS)
    for mode in ("tilted", "untilted"):
        result = classifier.classify(image, grid_for(image), mode=mode, min_confidence=0.5)
        assert endpoints(result.calls) == ENDPOINTS
    classifier.close()
    assert CudaState.memory == {} and CudaState.contexts_alive == 0
    create_classifier(settings).close()  # type: ignore[union-attr]
    assert BuildStats.builds == 1  # from the engine cache


def test_tensorrt_runner_checks_the_batch_range(wells: Path, tmp_path: Path, fake_trt) -> None:  # type: ignore[no-untyped-def]
    model = load_wells_model(wells)
    net = model.network("tilted", "fp32")
    from edge.detect.tensor_backends import EngineSource

    runner = TensorRTBatchRunner(
        EngineSource("w", wells, net.onnx_path, net.sha256),
        input_name="crops",
        sample_shape=(3, 32, 32),
        max_batch=8,
        opt_batch=4,
        engine_cache_dir=tmp_path / "e",
    )
    out = runner.run(np.full((3, 3, 32, 32), 0.5, dtype=np.float32))
    assert out.shape == (3, 4) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(DetectorError, match=r"batch range 1\.\.8"):
        runner.run(np.zeros((9, 3, 32, 32), dtype=np.float32))
    runner.close()
    with pytest.raises(DetectorError, match="fp16"):
        TensorRTBatchRunner(
            EngineSource("w", wells, net.onnx_path, net.sha256),
            input_name="crops",
            sample_shape=(3, 32, 32),
            max_batch=8,
            opt_batch=4,
            engine_cache_dir=tmp_path / "e",
            precision="int8",
        )


def test_tensorrt_falls_back_to_onnx_when_asked(wells: Path, tmp_path: Path, fake_trt) -> None:  # type: ignore[no-untyped-def]
    CudaState.fail_init = "cuInit failed: no CUDA-capable device is detected"
    settings = TensorRTDetectorSettings(wells_model_dir=wells, engine_cache_dir=tmp_path / "e")
    with pytest.raises(DetectorError, match="no usable CUDA GPU"):
        create_classifier(settings)
    fallback = create_classifier(settings.model_copy(update={"fallback": "onnx"}))
    assert fallback is not None and fallback.backend == "onnx"
    fallback.close()


# --- the real thing (Jetson / GPU machine: tests/edge/detect/gpu_check.sh) ------------------
@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed (no GPU here)"
)
def test_real_tensorrt_classifier_matches_onnx_runtime(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    wells = root / "models" / "hi-wells"
    samples = root / "models" / "samples"
    if not (wells / "manifest.json").is_file() or not (samples / "index.json").is_file():
        pytest.skip("models/hi-wells and models/samples are needed")
    trt = create_classifier(
        TensorRTDetectorSettings(wells_model_dir=wells, engine_cache_dir=tmp_path / "engines")
    )
    ort = create_classifier(OnnxDetectorSettings(wells_model_dir=wells, precision="fp32"))
    assert trt is not None and ort is not None and trt.backend == "tensorrt"
    same = total = 0
    try:
        for entry in json.loads((samples / "index.json").read_text()):
            image = cv2.imread(str(samples / entry["image"]))
            grid = CalibrationGrid.from_json((samples / entry["calibration"]).read_text())
            mode = entry.get("reading", "tilted")
            got = trt.classify(image, grid, mode=mode, min_confidence=0.5).calls
            want = ort.classify(image, grid, mode=mode, min_confidence=0.5).calls
            same += sum(got[w].state == want[w].state for w in want)
            total += len(want)
    finally:
        trt.close()
        ort.close()
    assert same / total >= 0.98, f"{same}/{total} well calls agree"  # fp16 against fp32


def test_the_row_decode_settles_an_uncertain_well_and_holds_an_unsure_row(wells: Path) -> None:
    """Row D (endpoint 6) gets a well half way between a button and a mat in column 3, below
    the well threshold: read well by well the row is `unread`; the row decode settles the well
    from the row's pattern and the row counts. Column 6 of row F made just as uncertain sits at
    the endpoint, where the pattern cannot tell: that row stays uncounted either way."""
    from core.rowdecode import RowDecodeSettings
    from edge.detect.base import create_detector
    from edge.detect.reader import PlateReader

    image = plates.plate_image(ENDPOINTS)
    radius = int(min(plates.WIDTH / 12, plates.HEIGHT / 8) * 0.35)
    for row, col in ((3, 2), (7, 4)):  # D3 inside the flowing run, H5 = row H's endpoint
        cx, cy = plates._centre(row, col)
        cv2.circle(image, (int(cx), int(cy)), radius, (70, 70, 205), -1)  # flowing 0.63
    # The disc classifier is a timid one (a button scores about 0.96, these two 0.63): its
    # evidence is sharpened and the row threshold lowered; the rule, not the tuning, is tested.
    decode = RowDecodeSettings(min_posterior=0.9, evidence_weight=3.0)
    reads = {}
    for enabled in (False, True):
        settings = OnnxDetectorSettings(
            wells_model_dir=wells,
            device="cpu",
            row_decode=decode.model_copy(update={"enabled": enabled}),
        )
        classifier = create_classifier(settings)
        assert classifier is not None
        reader = PlateReader(
            create_detector(FakeDetectorSettings()),
            grid=grid_for(image),
            wells=classifier,
            well_threshold=0.7,
        )
        reads[enabled] = reader.read(image)
        result = classifier.classify(image, grid_for(image), mode="tilted", min_confidence=0.7)
        assert result.well_calls["D3"].state == "unread"  # per well, always
        assert len(result.rows) == (8 if enabled else 0)
        classifier.close()
    per_well, decoded = reads[False], reads[True]
    assert not per_well.needs_review and not decoded.needs_review
    d_plain, d_decoded = per_well.rows[3], decoded.rows[3]
    assert not d_plain.counted and "unread" in d_plain.flags
    assert d_decoded.counted and d_decoded.endpoint == 6
    assert decoded.wells["D3"].state == "flowing"
    assert "low_confidence" in decoded.wells["D3"].flags
    assert not per_well.rows[7].counted and not decoded.rows[7].counted
    assert decoded.wells["H5"].state == "unread"


def test_mirror_average_reads_each_crop_with_its_mirror_image(tmp_path: Path) -> None:
    """With `input.mirror_average` the classifier's probabilities are the mean over each crop
    and its mirror image, and the evaluation's reader (models.wells.reading) gives the same
    ones; without it, the crop alone. The lopsided graph tells the two apart."""
    import onnxruntime as ort

    from edge.detect.wellcrops import crop_wells
    from models.wells.reading import WellsModel
    from tests.edge.detect.wells_models import lopsided_wells_dir

    image = plates.plate_image(ENDPOINTS)
    image[:, : image.shape[1] // 2] //= 3  # the left half of the plate darker: lopsided crops
    grid = grid_for(image)
    crops = crop_wells(image, grid, size=32)
    crops[:, :, :, :16] *= 0.3  # and every crop's left half: the graph leans to `flowing`
    probe = lopsided_wells_dir(tmp_path / "probe", mirror_average=False) / "lopsided.onnx"
    sess = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])

    def plain(x: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {"crops": np.ascontiguousarray(x)})[0])

    def averaged(x: np.ndarray) -> np.ndarray:
        return (plain(x) + plain(x[..., ::-1])) / 2

    assert np.abs(plain(crops) - plain(crops[..., ::-1])).max() > 0.2  # not symmetric
    plate_crops = crop_wells(image, grid, size=32)
    for flag in (False, True):
        folder = lopsided_wells_dir(tmp_path / f"m{flag}", mirror_average=flag)
        assert load_wells_model(folder).mirror_average is flag
        classifier = create_classifier(
            OnnxDetectorSettings(wells_model_dir=folder, device="cpu", precision="fp32")
        )
        assert classifier is not None
        got = classifier._run(classifier._networks[("tilted", "fp32")], crops)
        result = classifier.classify(image, grid, mode="tilted", min_confidence=0.0)
        classifier.close()
        expect = averaged if flag else plain
        assert np.allclose(got, expect(crops), atol=1e-6)
        want = expect(plate_crops)
        confidences = [c.confidence for c in result.well_calls.values()]
        assert np.allclose(confidences, want.max(axis=1), atol=1e-6)
        reader = WellsModel.load(folder, "tilted", "fp32")
        assert reader.mirror_average is flag
        assert np.allclose(reader.probs(image, grid), want, atol=1e-6)
    assert not np.allclose(plain(crops), averaged(crops), atol=1e-2)


def test_confidence_given_a_well_sets_the_nowell_share_aside(tmp_path: Path) -> None:
    """With `output.confidence_given_well` a well's confidence is its state's share of
    flowing/agglutinated/invalid, in the appliance and in the evaluation's reader alike: a well
    that the plain confidence leaves `unread` is called, its state unchanged."""
    from edge.detect.wellcrops import given_a_well
    from models.wells.reading import WellsModel
    from tests.edge.detect.wells_models import lopsided_wells_dir

    image = plates.plate_image(ENDPOINTS)
    grid = grid_for(image)
    results = {}
    for flag in (False, True):
        folder = lopsided_wells_dir(  # nowell_bias 1: about a quarter of each crop's mass
            tmp_path / f"g{flag}", mirror_average=False, confidence_given_well=flag, nowell_bias=1.0
        )
        assert load_wells_model(folder).confidence_given_well is flag
        classifier = create_classifier(
            OnnxDetectorSettings(wells_model_dir=folder, device="cpu", precision="fp32")
        )
        assert classifier is not None
        results[flag] = classifier.classify(image, grid, mode="tilted", min_confidence=0.5)
        classifier.close()
        reader = WellsModel.load(folder, "tilted", "fp32")
        assert reader.confidence_given_well is flag
        raw = WellsModel.load(folder / ".." / "gFalse", "tilted", "fp32").probs(image, grid)
        want = given_a_well(raw, CLASSES) if flag else raw
        assert np.allclose(reader.probs(image, grid), want, atol=1e-6)
        confidences = [c.confidence for c in results[flag].well_calls.values()]
        assert np.allclose(confidences, want.max(axis=1), atol=1e-6)
    plain, given = results[False].well_calls, results[True].well_calls
    assert [c.class_name for c in plain.values()] == [c.class_name for c in given.values()]
    raised = [w for w in plain if plain[w].state == "unread" and given[w].state != "unread"]
    assert raised, "the lopsided graph leaves some wells below 0.5 with their nowell share"
    for w in raised:
        assert given[w].state == given[w].class_name and given[w].flags == ()
    assert not [w for w in plain if plain[w].state != "unread" and given[w].state == "unread"]
