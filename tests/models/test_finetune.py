"""models.finetune: field data from a dataset export, splits by plate and by site, the
evaluation gate (no torch needed), and a tiny fine-tuning run in the [train] environment with
generator plates standing in for field plates."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cloud.dataset import jpeg_size, yolo_lines
from core.calibration import CalibrationGrid
from core.ota import GateReport
from models.finetune import (
    FieldPlate,
    FinetuneError,
    gate_report,
    load_field_dataset,
    onnx_accuracy,
    read_yolo,
    split_field,
)
from models.synth.render2 import render_plate_v2
from models.wells.dataset import CLASS_ID, CropSet, build
from tests.models.trainvenv import SKIP_REASON, run_train_python, train_python

SHIPPED_VERSION = json.loads(
    (Path(__file__).resolve().parents[2] / "models" / "hi-wells" / "manifest.json").read_text()
)["version"]

REPO = Path(__file__).resolve().parents[2]


def write_field_export(out: Path, plates: list[tuple[str, str, int, str]]) -> None:
    """A dataset directory in `microplate-cloud dataset export`'s format from generator plates:
    (site, run id, generator index, mode) each, labels from the truth and the drawn grid."""
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    entries = []
    for site, run_id, index, mode in plates:
        sample = render_plate_v2(77, index, mode=mode)
        grid = CalibrationGrid.from_legacy(sample.calibration).scaled(sample.width, sample.height)
        wells = [
            {
                "well_id": w["well_id"],
                "state": w["state"],
                "box": list(grid.cell_box(w["row"], w["col"])),
            }
            for w in sample.wells
        ]
        width, height = jpeg_size(sample.jpeg)
        (out / "images" / f"{run_id}.jpg").write_bytes(sample.jpeg)
        lines = yolo_lines(wells, width, height)
        (out / "labels" / f"{run_id}.txt").write_text("\n".join(lines) + "\n")
        entries.append(
            {
                "run_id": run_id,
                "site": site,
                "device": "reader-1",
                "reading": mode,
                "image": f"images/{run_id}.jpg",
                "labels": f"labels/{run_id}.txt",
                "sha256": hashlib.sha256(sample.jpeg).hexdigest(),
                "corrected_wells": [],
            }
        )
    (out / "manifest.json").write_text(json.dumps({"format": "yolo", "plates": entries}))


def _plate(run_id: str, site: str) -> FieldPlate:
    return FieldPlate(
        run_id, site, "tilted", CropSet(np.zeros((1, 3, 4, 4), np.uint8), np.zeros(1, np.int64))
    )


def test_gate_accepts_only_when_every_check_holds() -> None:
    ok = gate_report(
        {
            "tilted.generator.wells_right": (0.981, 0.979, 500),
            "tilted.field_sites.wells_right": (0.9, 0.9, 96),
        },
        baseline_version="2.1.0",
    )
    assert ok["accepted"] and GateReport.model_validate(ok).accepted
    bad = gate_report(
        {
            "tilted.generator.wells_right": (0.981, 0.979, 500),
            "tilted.field_plates.wells_right": (0.88, 0.90, 96),
            "tilted.field_sites.wells_right": (0.5, 0.5, 0),  # empty: left out
        },
        baseline_version="2.1.0",
    )
    report = GateReport.model_validate(bad)
    assert not report.accepted
    assert [c.name for c in report.checks if not c.passed] == ["tilted.field_plates.wells_right"]
    assert len(report.checks) == 2
    within = gate_report(
        {"x.generator.wells_right": (0.895, 0.9, 10)}, baseline_version="2.1.0", tolerance=0.01
    )
    assert GateReport.model_validate(within).accepted
    with pytest.raises(FinetuneError, match="nothing to gate"):
        gate_report({"x.generator.wells_right": (1.0, 1.0, 0)}, baseline_version="2.1.0")


def test_split_holds_out_whole_sites_and_whole_plates() -> None:
    plates = [_plate(f"r{i}", "lab-a") for i in range(8)] + [
        _plate(f"s{i}", "lab-b") for i in range(3)
    ]
    split = split_field(plates, plate_fraction=0.25, seed=1)
    assert {p.site for p in split.by_site} == {"lab-b"} and len(split.by_site) == 3
    assert len(split.by_plate) == 2 and len(split.train) == 6
    ids = [p.run_id for p in split.train + split.by_plate + split.by_site]
    assert sorted(ids) == sorted(p.run_id for p in plates)  # each plate in exactly one set
    chosen = split_field(plates, holdout_sites=["lab-a"], seed=1)
    assert {p.site for p in chosen.by_site} == {"lab-a"} and {p.site for p in chosen.train} == {
        "lab-b"
    }
    with pytest.raises(FinetuneError, match="lab-z"):
        split_field(plates, holdout_sites=["lab-z"])


def test_accuracy_reads_each_crop_with_its_mirror_when_asked() -> None:
    ort = pytest.importorskip("onnxruntime")
    path = REPO / "models" / "hi-wells" / "tilted.onnx"
    crops = build(9101, 0, 2, "tilted", size=32, scale=1.0, clutter_every=0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = crops.x.astype(np.float32) / 255.0
    alone = session.run(None, {"crops": x})[0]
    mirrored = session.run(None, {"crops": np.ascontiguousarray(x[..., ::-1])})[0]
    both = ((alone + mirrored) / 2).argmax(1)
    # Small batches: the mirror doubles each batch, and batches must not mix crops.
    got = onnx_accuracy(path, crops, mirror_average=True, batch=50)
    assert got == pytest.approx(float((both == crops.y).mean()))
    assert onnx_accuracy(path, crops, batch=50) == pytest.approx(
        float((alone.argmax(1) == crops.y).mean())
    )
    assert (both != alone.argmax(1)).any()  # the two readings differ on these crops


def test_exported_labels_cut_the_wells_the_shipped_model_reads(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    write_field_export(tmp_path, [("lab-a", "p0", 0, "tilted"), ("lab-a", "p1", 1, "tilted")])
    lines = read_yolo(tmp_path / "labels" / "p0.txt")
    assert len(lines) == 96 and all(0 < v < 1 for _, *box in lines for v in box)
    plates = load_field_dataset(tmp_path)
    assert [len(p.crops) for p in plates] == [96, 96]
    truth = [CLASS_ID[w["state"]] for w in render_plate_v2(77, 0, mode="tilted").wells]
    assert plates[0].crops.y.tolist() == truth
    # The crops are the wells: the shipped model reads them about as well as generator plates.
    acc = onnx_accuracy(REPO / "models" / "hi-wells" / "tilted.onnx", plates[0].crops)
    assert acc >= 0.85, acc
    (tmp_path / "images" / "p1.jpg").write_bytes(b"\xff\xd8 not the same photo")
    with pytest.raises(FinetuneError, match="sha256"):
        load_field_dataset(tmp_path)


@pytest.mark.timeout(900)
def test_a_tiny_finetune_run_writes_a_gated_candidate(tmp_path: Path) -> None:
    python = train_python()
    if python is None:
        pytest.skip(SKIP_REASON)
    ort = pytest.importorskip("onnxruntime")
    field = tmp_path / "field"
    write_field_export(
        field,
        [("lab-a", f"a{i}", i, "tilted") for i in range(3)] + [("lab-b", "b0", 10, "tilted")],
    )
    out = tmp_path / "candidate"
    cmd = [
        python, "-m", "models.finetune", "--field", str(field), "--out", str(out),
        "--version", "9.0.0-test", "--modes", "tilted", "--generator-plates", "2",
        "--holdout-generator-plates", "1", "--epochs", "1", "--batch", "256",
    ]  # fmt: skip
    done = run_train_python(python, cmd[1:], timeout=840)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    report = GateReport.model_validate(manifest["gate"])
    names = {c.name for c in report.checks}
    assert names == {
        "tilted.field_plates.wells_right",
        "tilted.field_sites.wells_right",
        "tilted.generator.wells_right",
    }
    by_name = {c.name: c for c in report.checks}
    assert by_name["tilted.field_sites.wells_right"].n == 96  # lab-b's one plate
    # The gate scores the shipped model the way the appliance reads it (its manifest's
    # mirror average), not one crop alone.
    held = build(9101, 0, 1, "tilted", size=32, scale=1.0, clutter_every=0)
    shipped_tilted = REPO / "models" / "hi-wells" / "tilted.onnx"
    assert by_name["tilted.generator.wells_right"].baseline == round(
        onnx_accuracy(shipped_tilted, held, mirror_average=True), 6
    )
    assert (
        manifest["base_version"] == SHIPPED_VERSION
        and manifest["trainer"]["modes"]["tilted"]["field_train_crops"] > 0
    )
    assert ("gate: accepted" in done.stdout) == report.accepted
    # The candidate is a working hi-wells graph; the mode not trained ships unchanged.
    session = ort.InferenceSession(str(out / "tilted.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"crops": np.zeros((3, 3, 32, 32), np.float32)})[0]
    assert probs.shape == (3, 4) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    shipped = (REPO / "models" / "hi-wells" / "untilted.onnx").read_bytes()
    assert (out / "untilted.onnx").read_bytes() == shipped
    # What `microplate-cloud models publish` would sign: both files, the metrics, the gate.
    from cloud.ota_cli import build_manifest

    release = build_manifest(
        argparse.Namespace(dir=out, name="hi-wells", version="9.0.0", plate_formats=None, notes="")
    )
    assert [f.path for f in release.files] == ["tilted.onnx", "untilted.onnx"]
    assert release.gate == report and release.base_version == SHIPPED_VERSION
    assert "tilted.generator.wells_right.candidate" in release.metrics
