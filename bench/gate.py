"""The plate-quality gate on held-out generator plates, through the appliance's reading path.

    python bench/gate.py [--wells models/hi-wells] [--plates 40] [--seed 9100]

For each generator v2 plate (half tilted, half untilted; a seed stream the trainer does not
use): read on its own grid (it should be clean: how many are held, and why), read through its
grid moved by half a well (it should be held), and the well and endpoint accuracy of the clean
reads against the generator's truth, per reading mode. Figures, never a pass/fail.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.calibration import CalibrationGrid  # noqa: E402
from edge.detect.base import create_detector  # noqa: E402
from edge.detect.classifier import create_classifier  # noqa: E402
from edge.detect.reader import PlateReader  # noqa: E402
from edge.detect.settings import FakeDetectorSettings, OnnxDetectorSettings  # noqa: E402


def moved(grid: CalibrationGrid) -> CalibrationGrid | None:
    hx = (grid.columns[-1] - grid.columns[0]) / (len(grid.columns) - 1) / 2
    hy = (grid.rows[-1] - grid.rows[0]) / (len(grid.rows) - 1) / 2
    dx = hx if grid.columns[-1] + hx <= grid.image_width else -hx
    dy = hy if grid.rows[-1] + hy <= grid.image_height else -hy
    try:
        return CalibrationGrid(
            columns=tuple(x + dx for x in grid.columns),
            rows=tuple(y + dy for y in grid.rows),
            image_width=grid.image_width,
            image_height=grid.image_height,
        )
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    from rich.progress import track

    from models.synth.render2 import render_plate_v2

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=Path, default=ROOT / "models" / "hi-wells")
    parser.add_argument("--plates", type=int, default=40)
    parser.add_argument("--seed", type=int, default=9100)
    args = parser.parse_args(argv)
    classifier = create_classifier(OnnxDetectorSettings(wells_model_dir=args.wells, device="cpu"))
    assert classifier is not None
    detector = create_detector(FakeDetectorSettings())
    held: Counter[str] = Counter()
    held_reasons: Counter[str] = Counter()
    caught = shifted_total = 0
    wells = {m: [0, 0] for m in ("tilted", "untilted")}
    rows = {m: [0, 0] for m in ("tilted", "untilted")}
    for i in track(range(args.plates), description="plates"):
        mode = ("tilted", "untilted")[i % 2]
        sample = render_plate_v2(args.seed, i, mode=mode)
        grid = CalibrationGrid.from_legacy(sample.calibration)
        reader = PlateReader(detector, grid=grid, wells=classifier, reading=mode)
        reading = reader.read_bytes(sample.jpeg)
        if reading.needs_review:
            held[mode] += 1
            held_reasons.update(reading.review_reasons)
        truth = {w["well_id"]: w["state"] for w in sample.wells}
        wells[mode][0] += sum(reading.wells[w].state == s for w, s in truth.items())
        wells[mode][1] += len(truth)
        for row, true_row in zip(reading.rows, sample.rows, strict=True):
            rows[mode][0] += row.endpoint == true_row["endpoint"]
            rows[mode][1] += 1
        other = moved(grid)
        if other is not None:
            shifted_total += 1
            again = PlateReader(detector, grid=other, wells=classifier, reading=mode)
            caught += again.read_bytes(sample.jpeg).needs_review
    print(f"{classifier.model.name} {classifier.model.version} {classifier.precision}, edge path")
    for mode in ("tilted", "untilted"):
        w, r = wells[mode], rows[mode]
        print(
            f"{mode:9} wells {w[0]}/{w[1]} ({100 * w[0] / max(w[1], 1):.2f} %), exact endpoints "
            f"{r[0]}/{r[1]} ({100 * r[0] / max(r[1], 1):.1f} %), good plates held {held[mode]}"
        )
    print(f"reasons on good plates: {dict(held_reasons) or 'none'}")
    print(f"half-well shift held: {caught}/{shifted_total}")
    classifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
