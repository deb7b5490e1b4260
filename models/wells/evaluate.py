"""Score a hi-wells model on held-out generator v2 plates (fresh seeds), in both reading modes.

    python -m models.wells.evaluate [--model models/hi-wells] [--plates 100] [--json OUT]

Each plate is rendered, cut through the grid the renderer drew, read as the product reads it
(threshold, ``nowell`` = unread, rows by ``core.titre``) and compared with its truth: wells right
(exact state; ``unread`` counts as not right), exact endpoints (the row's endpoint and whether it
is counted both match the truth's), and wrong counted titres (a counted row whose titre differs
from the truth's, or that the truth would not count). Streams 9001 (tilted) and 9002
(untilted) are used by nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.calibration import CalibrationGrid
from core.wells import DEFAULT_MIN_CONFIDENCE
from models.synth.look import READING_MODES
from models.synth.render2 import render_plate_v2
from models.wells.reading import (
    PRECISIONS,
    WellsModel,
    calls_from_probs,
    calls_from_states,
    rows_of,
)

logger = logging.getLogger(__name__)
HELD_OUT_SEEDS = {"tilted": 9001, "untilted": 9002}


def evaluate_mode(
    model: WellsModel, seed: int, plates: int, threshold: float = DEFAULT_MIN_CONFIDENCE
) -> dict[str, Any]:
    wells = right = unread = rows = exact = wrong_titres = 0
    confusion = np.zeros((4, len(model.classes) + 1), np.int64)  # truth F/A/I x call (+unread)
    truth_index = {"flowing": 0, "agglutinated": 1, "invalid": 2}
    for index in range(plates):
        sample = render_plate_v2(seed, index, mode=model.mode)
        grid = CalibrationGrid.from_legacy(sample.calibration)
        probs = model.probs(sample.image, grid)
        calls = calls_from_probs(probs, model.classes, threshold)
        states = [w["state"] for w in sample.wells]
        for state, call, p in zip(states, calls.values(), probs, strict=True):
            wells += 1
            right += call.state == state
            unread += call.state == "unread"
            k = len(model.classes) if call.state == "unread" else int(np.argmax(p))
            confusion[truth_index[state], k] += 1
        truth_rows = rows_of(calls_from_states(states))
        for got, want in zip(rows_of(calls), truth_rows, strict=True):
            rows += 1
            exact += got.endpoint == want.endpoint and got.counted == want.counted
            if got.counted and (not want.counted or got.counted_titre != want.counted_titre):
                wrong_titres += 1
    return {
        "mode": model.mode,
        "precision": model.precision,
        "seed": seed,
        "plates": plates,
        "wells": wells,
        "wells_right": right,
        "wells_right_share": round(right / wells, 4),
        "unread_wells": unread,
        "rows": rows,
        "exact_endpoints": exact,
        "exact_endpoint_share": round(exact / rows, 4),
        "wrong_counted_titres": wrong_titres,
        "confusion_rows_truth_FAI_cols_calls": {
            "columns": [*model.classes, "unread"],
            "rows": confusion[:3].tolist(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.wells.evaluate", description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/hi-wells"))
    parser.add_argument("--plates", type=int, default=100)
    parser.add_argument("--precision", choices=(*PRECISIONS, "both"), default="both")
    parser.add_argument("--mode", choices=(*READING_MODES, "both"), default="both")
    parser.add_argument("--threshold", type=float, default=DEFAULT_MIN_CONFIDENCE)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.plates < 1:
        parser.error("--plates must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    precisions = PRECISIONS if args.precision == "both" else (args.precision,)
    modes = READING_MODES if args.mode == "both" else (args.mode,)
    report = []
    for mode in modes:
        for precision in precisions:
            model = WellsModel.load(args.model, mode, precision)
            result = evaluate_mode(model, HELD_OUT_SEEDS[mode], args.plates, args.threshold)
            report.append(result)
            print(
                f"{mode:9} {precision:5}: wells {100 * result['wells_right_share']:.2f} % "
                f"({result['unread_wells']} unread), exact endpoints "
                f"{100 * result['exact_endpoint_share']:.2f} %, "
                f"{result['wrong_counted_titres']} wrong counted titres, {args.plates} plates"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
