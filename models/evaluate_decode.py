"""Per well against row decode, on generator v2 plates, side by side (same plates, same probs).

    python -m models.evaluate_decode [--model models/hi-wells] [--plates 60] [--json OUT]
    python -m models.evaluate_decode --tune [--plates 40]      # the tuning stream, a sweep

Scores exactly as ``python -m models.wells.evaluate`` (the same held-out streams 9001 tilted /
9002 untilted, the same truth and figures: wells right, exact endpoints, wrong counted titres)
and adds ``rows counted`` (and how many of those are right), once with the wells read one by
one ("per well", the product without the decode) and once through ``core.rowdecode`` ("row
decode", with the settings' defaults unless given). ``--tune`` reads streams 9101 / 9102
instead (used for nothing else) and sweeps the decode's settings there: the defaults are chosen
on that stream, never on the held-out streams or on real photos.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.calibration import CalibrationGrid
from core.rowdecode import RowDecodeSettings
from core.wells import DEFAULT_MIN_CONFIDENCE
from models.synth.look import READING_MODES
from models.synth.render2 import render_plate_v2
from models.wells.evaluate import HELD_OUT_SEEDS
from models.wells.reading import PRECISIONS, WellsModel, calls_from_states, read_calls, rows_of

TUNING_SEEDS = {"tilted": 9101, "untilted": 9102}
READS = ("per well", "row decode")


def plate_probs(
    models: list[WellsModel], seed: int, plates: int, cache: Path | None = None
) -> list[tuple[list[str], dict[str, np.ndarray]]]:
    """Each plate's true states and every model's probabilities (rendered once; kept in
    ``cache``, an .npz, when given, and read back from it when it holds the same plates)."""
    out = []
    mode = models[0].mode
    key = f"{mode}-{seed}-{plates}-" + "-".join(m.precision for m in models)
    if cache is not None and cache.is_file():
        held = np.load(cache, allow_pickle=False)
        if f"{key}/states" in held:
            states_all = held[f"{key}/states"]
            return [
                (
                    [str(s) for s in states_all[i]],
                    {m.precision: held[f"{key}/{m.precision}"][i] for m in models},
                )
                for i in range(plates)
            ]
    for index in range(plates):
        sample = render_plate_v2(seed, index, mode=mode)
        grid = CalibrationGrid.from_legacy(sample.calibration)
        states = [w["state"] for w in sample.wells]
        out.append((states, {m.precision: m.probs(sample.image, grid) for m in models}))
    if cache is not None:
        arrays = dict(np.load(cache, allow_pickle=False)) if cache.is_file() else {}
        arrays[f"{key}/states"] = np.array([s for s, _ in out])
        for m in models:
            arrays[f"{key}/{m.precision}"] = np.stack([p[m.precision] for _, p in out])
        np.savez_compressed(cache, **arrays)
    return out


def score(
    data: list[tuple[list[str], dict[str, np.ndarray]]],
    precision: str,
    classes: list[str],
    threshold: float,
    decode: RowDecodeSettings | None,
) -> dict[str, Any]:
    wells = right = unread = rows = exact = wrong = counted = counted_right = 0
    for states, probs in data:
        calls, _ = read_calls(probs[precision], classes, threshold, decode=decode)
        for state, call in zip(states, calls.values(), strict=True):
            wells += 1
            right += call.state == state
            unread += call.state == "unread"
        for got, want in zip(rows_of(calls), rows_of(calls_from_states(states)), strict=True):
            rows += 1
            exact += got.endpoint == want.endpoint and got.counted == want.counted
            if got.counted:
                counted += 1
                if want.counted and got.counted_titre == want.counted_titre:
                    counted_right += 1
                else:
                    wrong += 1
    truth_counted = sum(r.counted for states, _ in data for r in rows_of(calls_from_states(states)))
    return {
        "wells": wells,
        "wells_right": right,
        "wells_right_share": round(right / wells, 4),
        "unread_wells": unread,
        "rows": rows,
        "countable_rows": truth_counted,
        "counted_rows": counted,
        "right_counted_rows": counted_right,
        "exact_endpoints": exact,
        "exact_endpoint_share": round(exact / rows, 4),
        "wrong_counted_titres": wrong,
    }


def line(mode: str, precision: str, read: str, r: dict[str, Any]) -> str:
    return (
        f"{mode:9} {precision:5} {read:10}: wells {100 * r['wells_right_share']:.2f} % "
        f"({r['unread_wells']} unread), exact endpoints {100 * r['exact_endpoint_share']:.2f} %, "
        f"rows counted {r['counted_rows']}/{r['countable_rows']} "
        f"({r['right_counted_rows']} right), "
        f"{r['wrong_counted_titres']} wrong counted titres"
    )


def tune(
    per_mode: dict[str, tuple[list[str], list[tuple[list[str], dict[str, np.ndarray]]]]],
    threshold: float,
    grid: dict[str, Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """Every combination of the sweep on the tuning stream, best first: fewest wrong counted
    titres (summed over modes and precisions), then most exact endpoints."""
    grid = grid or {
        "min_posterior": (0.98, 0.99, 0.995, 0.999),
        "skip_rate": (0.01, 0.03),
        "invalid_rate": (0.1, 0.2, 0.3),
        "evidence_weight": (1.5, 2.0, 3.0),
        "reversed_rate": (0.1,),
    }
    found = []
    for values in itertools.product(*grid.values()):
        settings = RowDecodeSettings(enabled=True, **dict(zip(grid, values, strict=True)))
        wrong = exact = counted = 0
        for classes, data in per_mode.values():
            for precision in data[0][1]:
                r = score(data, precision, classes, threshold, settings)
                wrong += r["wrong_counted_titres"]
                exact += r["exact_endpoints"]
                counted += r["counted_rows"]
        found.append(
            {
                **settings.model_dump(exclude={"enabled"}),
                "wrong": wrong,
                "exact": exact,
                "counted": counted,
            }
        )
    found.sort(key=lambda f: (f["wrong"], -f["exact"]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate_decode", description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/hi-wells"))
    parser.add_argument("--plates", type=int, default=60)
    parser.add_argument("--precision", choices=(*PRECISIONS, "both"), default="both")
    parser.add_argument("--mode", choices=(*READING_MODES, "both"), default="both")
    parser.add_argument("--threshold", type=float, default=DEFAULT_MIN_CONFIDENCE)
    parser.add_argument("--tune", action="store_true", help="sweep on the tuning stream")
    parser.add_argument("--cache", type=Path, default=None, help="keep the probabilities (.npz)")
    parser.add_argument("--grid", type=json.loads, default=None, help="the sweep, as JSON")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.plates < 1:
        parser.error("--plates must be at least 1")
    precisions = PRECISIONS if args.precision == "both" else (args.precision,)
    modes = READING_MODES if args.mode == "both" else (args.mode,)
    seeds = TUNING_SEEDS if args.tune else HELD_OUT_SEEDS
    per_mode = {}
    for mode in modes:
        models = [WellsModel.load(args.model, mode, p) for p in precisions]
        data = plate_probs(models, seeds[mode], args.plates, args.cache)
        per_mode[mode] = (models[0].classes, data)
    if args.tune:
        for mode, (classes, data) in per_mode.items():
            for precision in precisions:
                r = score(data, precision, classes, args.threshold, None)
                print(line(mode, precision, "per well", r))
        found = tune(per_mode, args.threshold, args.grid)
        for f in found[:15]:
            print(json.dumps(f))
        if args.json is not None:
            args.json.write_text(json.dumps(found, indent=1) + "\n")
        return 0
    report = []
    for mode, (classes, data) in per_mode.items():
        for precision in precisions:
            for read, decode in zip(READS, (None, RowDecodeSettings(enabled=True)), strict=True):
                r = score(data, precision, classes, args.threshold, decode)
                print(line(mode, precision, read, r))
                report.append(
                    {
                        "mode": mode,
                        "precision": precision,
                        "read": read,
                        "seed": seeds[mode],
                        "plates": args.plates,
                        **r,
                    }
                )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
