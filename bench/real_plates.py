"""The real plate photos through the appliance's own reading path (evaluation only).

    python bench/real_plates.py [--wells models/hi-wells] [--real-dir ../shared/real-plates]
                                [--precision int8|fp32|both] [--threshold 0.5]
                                [--read per-well|row-decode|both]

Same photos, readings by eye and scoring rules as `models/evaluate_real.py` (which it imports:
plate list, reading modes, `SOURCES.md` parser, possible titres), but each photo goes through
`PlateReader.read_bytes` exactly as the appliance reads it: file bytes -> reduced JPEG decode
-> `crop_wells` -> the classifier via the edge's ONNX Runtime backend -> well calls -> the
plate-quality gate -> rows (held rows are not counted) -> stats. So the figures include what the
edge adds: decode reduction, the well threshold, the row decode (`--read`: the appliance with
`detector.row_decode.enabled` off or on; both by default) and the gate. The photos are
third-party: read at run time only; nothing of them is written anywhere. Figures, never a
pass/fail.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.calibration import CalibrationGrid  # noqa: E402
from core.rowdecode import RowDecodeSettings  # noqa: E402
from edge.detect.base import create_detector  # noqa: E402
from edge.detect.classifier import create_classifier  # noqa: E402
from edge.detect.reader import PlateReader  # noqa: E402
from edge.detect.settings import FakeDetectorSettings, OnnxDetectorSettings  # noqa: E402


def score(plate: Any, letters: list[str], reading: Any, truths: list[Any]) -> dict[str, Any]:
    from models.evaluate_real import LETTER

    scored = right = unread = 0
    for letter, call in zip(letters, reading.wells.values(), strict=True):
        if letter not in LETTER:
            continue
        scored += 1
        right += call.state == LETTER[letter]
        unread += call.state == "unread"
    counted = [r for r in reading.rows if r.counted]
    wrong = [r for r in counted if r.counted_titre not in truths[r.row]]
    return {
        "plate": plate.name,
        "mode": plate.mode,
        "scored": scored,
        "right": right,
        "unread": unread,
        "countable": sum(1 for t in truths if t != {None}),
        "counted": len(counted),
        "right_rows": len(counted) - len(wrong),
        "wrong_titres": [f"{r.label}:{r.counted_titre}" for r in wrong],
        "needs_review": reading.needs_review,
        "reasons": list(reading.review_reasons),
        "ms": reading.timings_ms.get("total", 0.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=Path, default=ROOT / "models" / "hi-wells")
    parser.add_argument("--real-dir", type=Path, default=ROOT.parent / "shared" / "real-plates")
    parser.add_argument("--precision", choices=["int8", "fp32", "both"], default="both")
    parser.add_argument("--threshold", type=float, default=0.5, help="the well threshold")
    parser.add_argument(
        "--read", choices=["per-well", "row-decode", "both"], default="both", help="row decode"
    )
    args = parser.parse_args(argv)
    if not (args.real_dir / "SOURCES.md").is_file():
        print(f"no real plate photos at {args.real_dir}: nothing to score")
        return 0
    from models.evaluate_real import PLATES, dilution_for, possible_titres, readings

    letters = readings((args.real_dir / "SOURCES.md").read_text(encoding="utf-8"))
    detector = create_detector(FakeDetectorSettings())  # the classifier reads calibrated plates
    precisions = ["int8", "fp32"] if args.precision == "both" else [args.precision]
    reads = ["per-well", "row-decode"] if args.read == "both" else [args.read]
    for precision, read in ((p, r) for p in precisions for r in reads):
        settings = OnnxDetectorSettings(
            wells_model_dir=args.wells,
            device="cpu",
            precision=precision,
            row_decode=RowDecodeSettings(enabled=read == "row-decode"),
        )
        classifier = create_classifier(settings)
        assert classifier is not None
        results = []
        for plate in PLATES:
            grid = CalibrationGrid.from_json(
                (args.real_dir / f"{plate.name}.calibration.json").read_text(encoding="utf-8")
            )
            dilution = dilution_for(plate)
            reader = PlateReader(
                detector,
                grid=grid,
                wells=classifier,
                reading=plate.mode,
                dilution=dilution,
                well_threshold=args.threshold,
            )
            reader.reading = plate.mode  # the photo's own mode, whatever its calibration says
            reading = reader.read_bytes((args.real_dir / plate.image).read_bytes())
            truths = possible_titres(letters[plate.name], dilution)
            results.append(score(plate, letters[plate.name], reading, truths))
        print(
            f"\n{classifier.model.name} {classifier.model.version}, {precision}, {read}, edge path"
        )
        print(
            f"{'plate':30} {'mode':8} {'wells right':>15} {'unread':>6} {'counted':>7} "
            f"{'right':>5} {'wrong titres':>12}  review"
        )
        for r in results:
            share = 100 * r["right"] / max(r["scored"], 1)
            review = ",".join(r["reasons"]) if r["needs_review"] else "-"
            print(
                f"{r['plate']:30} {r['mode']:8} {r['right']:>4}/{r['scored']:<4} {share:5.1f}% "
                f"{r['unread']:>6} {r['counted']:>7} {r['right_rows']:>5} "
                f"{len(r['wrong_titres']):>12}  {review} {' '.join(r['wrong_titres'])}"
            )
        scored = sum(r["scored"] for r in results)
        right = sum(r["right"] for r in results)
        tilted = [r for r in results if r["plate"].startswith("betagro_plate")]
        print(
            f"all: {right}/{scored} wells right ({100 * right / max(scored, 1):.1f} %), "
            f"{sum(r['unread'] for r in results)} unread, "
            f"{sum(r['counted'] for r in results)} rows counted, "
            f"{sum(len(r['wrong_titres']) for r in results)} wrong counted titres; "
            f"tilted plates: {sum(r['right_rows'] for r in tilted)}/16 rows counted right; "
            f"held for review: {sum(r['needs_review'] for r in results)}/{len(results)}"
        )
        classifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
