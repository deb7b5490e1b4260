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


class _Tally:
    def __init__(self, model: WellsModel) -> None:
        self.model = model
        self.wells = self.right = self.unread = self.rows = self.exact = self.wrong = 0
        self.confusion = np.zeros((3, len(model.classes) + 1), np.int64)

    def add(
        self, sample_image: np.ndarray, grid: CalibrationGrid, states: list[str], threshold: float
    ) -> None:
        probs = self.model.probs(sample_image, grid)
        calls = calls_from_probs(probs, self.model.classes, threshold)
        truth_index = {"flowing": 0, "agglutinated": 1, "invalid": 2}
        for state, call, p in zip(states, calls.values(), probs, strict=True):
            self.wells += 1
            self.right += call.state == state
            self.unread += call.state == "unread"
            k = len(self.model.classes) if call.state == "unread" else int(np.argmax(p))
            self.confusion[truth_index[state], k] += 1
        truth_rows = rows_of(calls_from_states(states))
        for got, want in zip(rows_of(calls), truth_rows, strict=True):
            self.rows += 1
            self.exact += got.endpoint == want.endpoint and got.counted == want.counted
            if got.counted and (not want.counted or got.counted_titre != want.counted_titre):
                self.wrong += 1

    def result(self, seed: int, plates: int) -> dict[str, Any]:
        return {
            "mode": self.model.mode,
            "precision": self.model.precision,
            "seed": seed,
            "plates": plates,
            "wells": self.wells,
            "wells_right": self.right,
            "wells_right_share": round(self.right / self.wells, 4),
            "unread_wells": self.unread,
            "rows": self.rows,
            "exact_endpoints": self.exact,
            "exact_endpoint_share": round(self.exact / self.rows, 4),
            "wrong_counted_titres": self.wrong,
            "confusion_rows_truth_FAI_cols_calls": {
                "columns": [*self.model.classes, "unread"],
                "rows": self.confusion.tolist(),
            },
        }


def evaluate_models(
    models: list[WellsModel], seed: int, plates: int, threshold: float = DEFAULT_MIN_CONFIDENCE
) -> list[dict[str, Any]]:
    """Every model (one mode, any precisions) on the same ``plates`` fresh plates of ``seed``."""
    modes = {m.mode for m in models}
    if len(modes) != 1:
        raise ValueError(f"one reading mode at a time, got {sorted(modes)}")
    mode = modes.pop()
    tallies = [_Tally(m) for m in models]
    for index in range(plates):
        sample = render_plate_v2(seed, index, mode=mode)
        grid = CalibrationGrid.from_legacy(sample.calibration)
        states = [w["state"] for w in sample.wells]
        for tally in tallies:
            tally.add(sample.image, grid, states, threshold)
    return [t.result(seed, plates) for t in tallies]


def evaluate_mode(
    model: WellsModel, seed: int, plates: int, threshold: float = DEFAULT_MIN_CONFIDENCE
) -> dict[str, Any]:
    return evaluate_models([model], seed, plates, threshold)[0]


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
        models = [WellsModel.load(args.model, mode, p) for p in precisions]
        for result in evaluate_models(models, HELD_OUT_SEEDS[mode], args.plates, args.threshold):
            report.append(result)
            print(
                f"{mode:9} {result['precision']:5}: "
                f"wells {100 * result['wells_right_share']:.2f} % "
                f"({result['unread_wells']} unread), exact endpoints "
                f"{100 * result['exact_endpoint_share']:.2f} %, "
                f"{result['wrong_counted_titres']} wrong counted titres, {args.plates} plates"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
