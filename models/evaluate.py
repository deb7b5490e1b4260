"""Accuracy of the shipped model on freshly generated plates never used in training.

    python -m models.evaluate --n 200 --seed 1000 --json models/hi-plate/evaluation.json \
        --card models/hi-plate/MODEL_CARD.md --write-manifest

Training uses stream seed 1 (plates 0..319); evaluation uses another stream (default 1000), so
no evaluation plate was ever seen in training. Each plate goes through the detector, the
box-centre well caller and the row endpoint rule, and is compared with the generator's truth:
well accuracy (an unread well counts as wrong), rows with the exact endpoint, the confusion
matrix, and the same figures broken down by each variation the generator applies.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from rich.progress import track

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.plate import PLATE_96
from core.titre import RowResult, row_results
from core.wells import ClassMap, WellCall, call_wells
from models.synth import GENERATOR_VERSION, render_plate
from models.synth.dataset import plate_stem
from models.synth.patterns import CLASSES

logger = logging.getLogger(__name__)

PREDICTED = (*CLASSES, "unread")

# (variation key, label, bucket edges or None for categorical)
BREAKDOWN: tuple[tuple[str, str, tuple[float, ...] | None], ...] = (
    ("resolution", "resolution", None),
    ("plate_type", "plate", None),
    ("blur_sigma", "defocus blur sigma (px at 1700 wide)", (0.0, 0.01, 1.0, 2.0, 3.01)),
    ("noise_sigma", "sensor noise sigma (0-255)", (0.0, 0.01, 4.0, 7.0, 10.01)),
    ("jpeg_quality", "JPEG quality", (35, 55, 75, 96)),
    ("colour_cast", "colour cast (max channel gain error)", (0.0, 0.05, 0.1, 0.151)),
    ("exposure", "exposure", (0.72, 0.85, 1.0, 1.121)),
    ("abs_rotation_deg", "rotation |deg|", (0.0, 0.5, 1.0, 1.51)),
    ("fill", "grid fill of frame", (0.78, 0.84, 0.9, 0.951)),
    ("gradient", "lighting gradient", (0.0, 0.08, 0.16, 0.251)),
    ("invalid_wells", "invalid wells on plate", (0, 1, 6, 12, 97)),
)

Detector = Callable[[np.ndarray], list[Detection]]
Calls = tuple[dict[str, WellCall], list[RowResult]]


class Reader(Protocol):
    name: str

    def __call__(self, plate: Plate) -> Calls: ...


@dataclass
class Plate:
    index: int
    jpeg: bytes
    wells: list[dict[str, Any]]
    calibration: dict[str, Any]
    variations: dict[str, Any]

    def image(self) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)


class ReferenceReader:
    """Reference decoder -> `core.wells.call_wells` -> `core.titre.row_results`."""

    def __init__(self, model_dir: Path, *, conf: float, min_confidence: float) -> None:
        from models.reference_decode import ReferenceDetector

        self.detector = ReferenceDetector(model_dir, conf=conf)
        self.class_map = ClassMap.for_model(self.detector.classes)
        self.min_confidence = min_confidence
        self.name = "reference decoder (models/reference_decode.py) + core"

    def __call__(self, plate: Plate) -> Calls:
        image = plate.image()
        grid = CalibrationGrid.from_legacy(plate.calibration).scaled(image.shape[1], image.shape[0])
        calls = call_wells(
            self.detector(image), grid, class_map=self.class_map, min_confidence=self.min_confidence
        )
        return calls, row_results(calls, PLATE_96)


class EdgeReader:
    """The product's own path: `edge.detect` (ONNX Runtime backend) reading the JPEG bytes."""

    def __init__(
        self, model_dir: Path, *, conf: float, min_confidence: float, precision: str = "auto"
    ) -> None:
        from edge.detect.base import create_detector
        from edge.detect.settings import OnnxDetectorSettings

        settings = OnnxDetectorSettings(
            model_dir=model_dir,
            device="cpu",
            min_confidence=conf,
            threads=2,
            precision=precision,
        )
        self.detector = create_detector(settings)
        self.min_confidence = min_confidence
        model = self.detector.model
        self.precision = model.precision
        self.model_file = model.onnx_path.name if model.onnx_path else "?"
        self.name = (
            f"edge.detect (ONNX Runtime backend, {model.precision} model {self.model_file}) "
            "+ edge.detect.reader.PlateReader"
        )

    def __call__(self, plate: Plate) -> Calls:
        from edge.detect.reader import PlateReader

        grid = CalibrationGrid.from_legacy(plate.calibration)
        reader = PlateReader(self.detector, grid=grid, min_confidence=self.min_confidence)
        reading = reader.read_bytes(plate.jpeg)
        return reading.wells, reading.rows


def make_reader(
    decoder: str,
    model_dir: Path,
    *,
    conf: float,
    min_confidence: float,
    precision: str = "auto",
) -> Reader:
    """`edge`, `reference`, or `auto` (the edge's path when it is installed, else reference).

    `precision` picks the edge detector's variant (auto: what the product runs on CPU); the
    reference decoder reads the fp32 model only.
    """
    if decoder in ("edge", "auto"):
        try:
            return EdgeReader(
                model_dir, conf=conf, min_confidence=min_confidence, precision=precision
            )
        except ImportError:
            if decoder == "edge":
                raise
            logger.warning("edge.detect is not available here: using the reference decoder")
    if precision not in ("auto", "fp32"):
        raise SystemExit(f"the reference decoder reads the fp32 model only, not {precision}")
    return ReferenceReader(model_dir, conf=conf, min_confidence=min_confidence)


def truth_rows(wells: list[dict[str, Any]]) -> list[RowResult]:
    calls = {
        w["well_id"]: WellCall(well_id=w["well_id"], row=w["row"], col=w["col"], state=w["state"])
        for w in wells
    }
    return row_results(calls, PLATE_96)


def rendered_plates(seed: int, indices: range) -> Iterator[Plate]:
    for index in indices:
        s = render_plate(seed, index)
        yield Plate(index, s.jpeg, s.wells, s.calibration, s.variations)


def stored_plates(data_dir: Path, seed: int, indices: range) -> Iterator[Plate]:
    """Plates written earlier by `python -m models.synth` (same seed, same generator version);
    a plate missing there is rendered."""
    for index in indices:
        path = data_dir / "truth" / f"{plate_stem(seed, index)}.json"
        if not path.exists():
            # Not written (yet): render it, which gives the very same plate.
            s = render_plate(seed, index)
            yield Plate(index, s.jpeg, s.wells, s.calibration, s.variations)
            continue
        truth = json.loads(path.read_text())
        if truth["generator_version"] != GENERATOR_VERSION:
            raise SystemExit(f"{path} comes from generator {truth['generator_version']}")
        jpeg = (data_dir / truth["image"]).read_bytes()
        yield Plate(index, jpeg, truth["wells"], truth["calibration"], truth["variations"])


def _bucket(value: float, edges: tuple[float, ...]) -> str:
    for lo, hi in itertools.pairwise(edges):
        if lo <= value < hi:
            if hi - lo <= 0.011:
                return f"{lo:g}"
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


class Tally:
    def __init__(self) -> None:
        self.plates = 0
        self.wells = 0
        self.wells_ok = 0
        self.rows = 0
        self.rows_ok = 0

    def add(self, wells: int, wells_ok: int, rows: int, rows_ok: int) -> None:
        self.plates += 1
        self.wells += wells
        self.wells_ok += wells_ok
        self.rows += rows
        self.rows_ok += rows_ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "plates": self.plates,
            "wells": self.wells,
            "well_accuracy": self.wells_ok / self.wells if self.wells else None,
            "rows": self.rows,
            "row_exact_endpoint": self.rows_ok / self.rows if self.rows else None,
        }


def evaluate(
    reader: Reader,
    n: int,
    seed: int,
    *,
    start: int = 0,
    data_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    confusion = {t: dict.fromkeys(PREDICTED, 0) for t in CLASSES}
    overall = Tally()
    by_var: dict[str, dict[str, Tally]] = defaultdict(lambda: defaultdict(Tally))
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    errors: list[dict[str, Any]] = []
    infer_ms: list[float] = []
    flags_ok = 0
    indices = range(start, start + n)
    source = (
        rendered_plates(seed, indices)
        if data_dir is None
        else stored_plates(data_dir, seed, indices)
    )
    for sample in track(source, total=n, description="evaluating", disable=not progress):
        index = sample.index
        t0 = time.perf_counter()
        calls, rows = reader(sample)
        infer_ms.append((time.perf_counter() - t0) * 1000)
        wells_ok = 0
        for well in sample.wells:
            got = calls[well["well_id"]].state
            confusion[well["state"]][got] += 1
            by_kind[well["kind"]][0] += 1
            if got == well["state"]:
                wells_ok += 1
                by_kind[well["kind"]][1] += 1
            else:
                errors.append(
                    {
                        "plate": index,
                        "well": well["well_id"],
                        "true": well["state"],
                        "kind": well["kind"],
                        "predicted": got,
                    }
                )
        expected = truth_rows(sample.wells)
        rows_ok = sum(
            got.endpoint == want.endpoint for got, want in zip(rows, expected, strict=True)
        )
        flags_ok += sum(
            set(got.flags) == set(want.flags) for got, want in zip(rows, expected, strict=True)
        )
        n_wells, n_rows = len(sample.wells), len(expected)
        overall.add(n_wells, wells_ok, n_rows, rows_ok)
        var = dict(sample.variations)
        var["abs_rotation_deg"] = abs(var["rotation_deg"])
        for key, _label, edges in BREAKDOWN:
            bucket = str(var[key]) if edges is None else _bucket(float(var[key]), edges)
            by_var[key][bucket].add(n_wells, wells_ok, n_rows, rows_ok)
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "plates": n,
        "first_index": start,
        "overall": {**overall.as_dict(), "row_flags_match": flags_ok / max(overall.rows, 1)},
        "confusion": confusion,
        "by_kind": {
            k: {"wells": v[0], "accuracy": v[1] / v[0]} for k, v in sorted(by_kind.items())
        },
        "by_variation": {
            key: {b: t.as_dict() for b, t in sorted(buckets.items())}
            for key, buckets in by_var.items()
        },
        "median_pipeline_ms": float(np.median(infer_ms)) if infer_ms else None,
        "errors": errors[:200],
    }


def _bucket_order(item: tuple[str, Any]) -> tuple[float, str]:
    """Numeric buckets ("6-12", ">=1") by their lower bound; names ("1280x720") as text."""
    head = item[0].lstrip(">=").split("-")[0]
    try:
        return float(head), item[0]
    except ValueError:
        return float("inf"), item[0]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def markdown(report: dict[str, Any]) -> str:
    o = report["overall"]
    first = report["first_index"]
    lines = [
        f"Evaluated on {report['plates']} fresh plates (generator {report['generator_version']}, "
        f"seed {report['seed']}, plates {first}..{first + report['plates'] - 1}; "
        f"training used seed 1). Decoder: {report.get('decoder', 'reference')}.",
        "",
        f"- **Well accuracy: {_pct(o['well_accuracy'])}** ({o['wells']} wells; "
        "an unread well counts as wrong)",
        f"- **Rows with the exact endpoint: {_pct(o['row_exact_endpoint'])}** ({o['rows']} rows; "
        "endpoints from `core.titre.row_results` on the predicted and on the true well states)",
        f"- Rows whose flags (skipped, no_inhibition, all_inhibited, unread) also match: "
        f"{_pct(o['row_flags_match'])}",
        f"- Well calls by `core.wells.call_wells` with min_confidence {report['min_confidence']} "
        "(below it a well is unread, which counts as wrong)",
        f"- Median time per plate through the reader (JPEG decode on the edge path, letterbox, "
        f"ONNX Runtime with 2 threads, decoding, well calls), on a shared 2-core machine: "
        f"{report['median_pipeline_ms']:.0f} ms (a by-product, not a benchmark: see the speed "
        "section)",
        "",
        "Confusion matrix (rows: truth, columns: prediction):",
        "",
        "| truth \\ predicted | " + " | ".join(PREDICTED) + " |",
        "|---|" + "---|" * len(PREDICTED),
    ]
    for t, row in report["confusion"].items():
        lines.append(f"| {t} | " + " | ".join(str(row[p]) for p in PREDICTED) + " |")
    lines += [
        "",
        "Accuracy by what the well shows:",
        "",
        "| well content | wells | accuracy |",
        "|---|---|---|",
    ]
    for kind, v in report["by_kind"].items():
        lines.append(f"| {kind} | {v['wells']} | {_pct(v['accuracy'])} |")
    lines += ["", "Per-variation breakdown:", ""]
    labels = {key: label for key, label, _ in BREAKDOWN}
    lines += [
        "| variation | bucket | plates | well accuracy | exact endpoint rows |",
        "|---|---|---|---|---|",
    ]
    for key, buckets in report["by_variation"].items():
        for bucket, t in sorted(buckets.items(), key=_bucket_order):
            lines.append(
                f"| {labels.get(key, key)} | {bucket} | {t['plates']} | {_pct(t['well_accuracy'])} "
                f"| {_pct(t['row_exact_endpoint'])} |"
            )
    return "\n".join(lines) + "\n"


def card_markers(precision: str) -> tuple[str, str]:
    """The model card section a report fills: `evaluation` for fp32 (the network as trained),
    `evaluation-int8` for the int8 variant."""
    name = "evaluation" if precision == "fp32" else f"evaluation-{precision}"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


BEGIN, END = card_markers("fp32")


def update_card(card: Path, text: str, precision: str = "fp32") -> None:
    begin, end = card_markers(precision)
    body = card.read_text()
    if begin not in body or end not in body:
        raise SystemExit(f"{card} has no {begin} ... {end} section to fill")
    head, rest = body.split(begin, 1)
    _, tail = rest.split(end, 1)
    card.write_text(f"{head}{begin}\n{text}{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("models/hi-plate"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument(
        "--data",
        type=Path,
        help="read plates written by `python -m models.synth` instead of rendering",
    )
    parser.add_argument(
        "--decoder",
        choices=("auto", "edge", "reference"),
        default="auto",
        help="edge: the product's edge.detect path; reference: models/reference_decode.py",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "int8"),
        default="auto",
        help="the edge detector's model variant (auto: int8 when the manifest ships one, as the "
        "product does on CPU); int8 metrics go to the manifest's variants.int8",
    )
    parser.add_argument("--conf", type=float, default=0.25, help="detector score threshold")
    parser.add_argument(
        "--min-confidence", type=float, default=0.5, help="well-call threshold (core default)"
    )
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument(
        "--report",
        type=Path,
        help="skip evaluating: re-render --card / --write-manifest from this saved report",
    )
    parser.add_argument("--card", type=Path, help="fill the evaluation section of this model card")
    parser.add_argument(
        "--write-manifest", action="store_true", help="store metrics in manifest.json"
    )
    args = parser.parse_args(argv)
    if args.seed == 1:
        parser.error("seed 1 is the training stream; evaluate on another seed")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.report:
        report = json.loads(args.report.read_text())
    else:
        reader = make_reader(
            args.decoder,
            args.model_dir,
            conf=args.conf,
            min_confidence=args.min_confidence,
            precision=args.precision,
        )
        report = evaluate(reader, args.n, args.seed, start=args.start, data_dir=args.data)
        report["decoder"] = reader.name
        report["precision"] = getattr(reader, "precision", "fp32")
        report["model_file"] = getattr(reader, "model_file", "model.onnx")
        report["min_confidence"] = args.min_confidence
    precision = report.get("precision", "fp32")
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.card:
        update_card(args.card, text, precision)
    if args.write_manifest:
        path = args.model_dir / "manifest.json"
        manifest = json.loads(path.read_text())
        o = report["overall"]
        metrics = {
            "well_accuracy": round(o["well_accuracy"], 5),
            "row_exact_endpoint": round(o["row_exact_endpoint"], 5),
            "plates": report["plates"],
            "eval_seed": report["seed"],
        }
        if precision == "fp32":
            manifest["metrics"] = metrics
        else:
            variant = manifest.get("variants", {}).get(precision)
            if variant is None:
                raise SystemExit(f"{path} has no variants.{precision} to store metrics in")
            variant["metrics"] = metrics
        path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
