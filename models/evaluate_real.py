"""Score a hi-wells model on the real plate photos (evaluation only; never trained on).

    python -m models.evaluate_real [--model models/hi-wells] [--precision fp32|int8|both]
                                   [--read per-well|row-decode|both]
                                   [--real-dir ../shared/real-plates] [--json OUT]

The photos and the readings by eye live outside the repository (``SOURCES.md`` in the real
plates folder: third-party images, not ours to copy). This script reads them at run time and
exits 0 with a message when the folder is absent.

Per plate, in the plate's reading mode (tilted Betagro plates tilted, McGinley and SMU
untilted): wells right (scored wells only: F/A/I; ``?`` wells are not scored; the SMU crop only
in columns 1-8), ``unread`` wells (below the threshold or ``nowell``: not wrong, not right),
counted rows, counted rows with a right titre, and **wrong counted titres**. Rows are computed
by ``core.titre.row_results`` exactly as the product computes them. A row's true titre is
every titre its ``?`` wells allow (each ``?`` read either way); a counted titre outside that set
is wrong. The empty plate has no countable row, so any counted row there is wrong.

``--read``: the wells read one by one (``per-well``), through the row decode
(``row-decode``, ``core.rowdecode`` switched on with its default settings), or both side by
side (default).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from core.calibration import CalibrationGrid
from core.rowdecode import RowDecodeSettings
from core.titre import DilutionSettings
from core.wells import DEFAULT_MIN_CONFIDENCE
from models.wells.reading import (
    PRECISIONS,
    WellsModel,
    calls_from_states,
    read_calls,
    rows_of,
)

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL_DIR = REPO_ROOT.parent / "shared" / "real-plates"
LETTER = {"F": "flowing", "A": "agglutinated", "I": "invalid"}
READS = {"per-well": None, "row-decode": RowDecodeSettings(enabled=True)}


@dataclass(frozen=True)
class RealPlate:
    name: str
    image: str
    mode: str
    scored_cols: int  # columns 1..scored_cols are scored (SMU: 8)


PLATES: tuple[RealPlate, ...] = (
    RealPlate("betagro_plate62_tilted", "betagro_plate62_tilted.jpg", "tilted", 12),
    RealPlate("betagro_plate37_tilted", "betagro_plate37_tilted.jpg", "tilted", 12),
    RealPlate("betagro_empty_plate", "betagro_empty_plate.jpg", "tilted", 12),
    RealPlate("mcginley_lectin_ha_composite", "mcginley_lectin_ha_composite.jpg", "untilted", 12),
    RealPlate("mcginley_plate2b_all_buttons", "mcginley_plate2b_all_buttons.jpg", "untilted", 12),
    RealPlate("smu_hi_crossreactivity_crop", "smu_hi_crossreactivity_crop.png", "untilted", 8),
)


def readings(sources_md: str) -> dict[str, list[str]]:
    """Each plate's 96 letters (row-major; ``-`` where not scored) from ``SOURCES.md``."""
    block = re.search(r"## My reading of each well.*?```\n(.*?)```", sources_md, re.S)
    if block is None:
        raise ValueError("SOURCES.md has no reading block ('## My reading of each well')")
    lines = block.group(1).strip().splitlines()
    names = [
        "betagro_plate62_tilted",
        "betagro_plate37_tilted",
        "mcginley_lectin_ha_composite",
        "smu_hi_crossreactivity_crop",
    ]
    widths = [12, 12, 12, 8]
    out: dict[str, list[str]] = {n: [] for n in names}
    rows = lines[1:]
    if len(rows) != 8:
        raise ValueError(f"expected 8 reading rows in SOURCES.md, found {len(rows)}")
    for line in rows:
        tokens = line.split()
        if len(tokens) != sum(widths):
            raise ValueError(f"a reading row has {len(tokens)} letters, expected {sum(widths)}")
        at = 0
        for name, width in zip(names, widths, strict=True):
            out[name].extend(tokens[at : at + width] + ["-"] * (12 - width))
            at += width
    out["betagro_empty_plate"] = ["I"] * 96
    out["mcginley_plate2b_all_buttons"] = ["F"] * 96
    return out


def dilution_for(plate: RealPlate) -> DilutionSettings:
    return DilutionSettings(control_columns=tuple(range(plate.scored_cols + 1, 13)))


def possible_titres(letters: list[str], dilution: DilutionSettings) -> list[set[float | None]]:
    """Per row, every counted titre the readings allow (None: the row is not countable)."""
    out: list[set[float | None]] = []
    for r in range(8):
        row = letters[12 * r : 12 * r + 12]
        unknown = [i for i, t in enumerate(row) if t == "?"]
        found: set[float | None] = set()
        for combo in itertools.product("FA", repeat=len(unknown)):
            filled = list(row)
            for i, t in zip(unknown, combo, strict=True):
                filled[i] = t
            states = ["agglutinated" if t == "-" else LETTER[t] for t in filled]
            full = ["invalid"] * 96
            full[12 * r : 12 * r + 12] = states
            result = rows_of(calls_from_states(full), dilution)[r]
            found.add(result.counted_titre if result.counted else None)
        out.append(found)
    return out


def score_plate(
    plate: RealPlate,
    letters: list[str],
    model: WellsModel,
    real_dir: Path,
    threshold: float,
    decode: RowDecodeSettings | None = None,
) -> dict[str, Any]:
    image = cv2.imread(str(real_dir / plate.image), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{plate.image}: cannot read the image")
    grid = CalibrationGrid.from_json((real_dir / f"{plate.name}.calibration.json").read_text())
    dilution = dilution_for(plate)
    calls, _ = read_calls(
        model.probs(image, grid), model.classes, threshold, decode=decode, dilution=dilution
    )
    scored = right = unread = 0
    confusion: dict[str, int] = {}
    for letter, call in zip(letters, calls.values(), strict=True):
        if letter not in LETTER:
            continue
        scored += 1
        if call.state == LETTER[letter]:
            right += 1
        elif call.state == "unread":
            unread += 1
        key = f"{letter}->{call.state}"
        confusion[key] = confusion.get(key, 0) + 1
    truths = possible_titres(letters, dilution)
    rows = rows_of(calls, dilution)
    counted = [r for r in rows if r.counted]
    right_rows = [r for r in counted if r.counted_titre in truths[r.row]]
    wrong = [
        {
            "row": r.label,
            "counted_titre": r.counted_titre,
            "true": sorted(str(t) for t in truths[r.row]),
        }
        for r in counted
        if r.counted_titre not in truths[r.row]
    ]
    return {
        "plate": plate.name,
        "mode": plate.mode,
        "precision": model.precision,
        "read": "row-decode" if decode is not None and decode.enabled else "per-well",
        "scored_wells": scored,
        "right_wells": right,
        "unread_wells": unread,
        "wrong_wells": scored - right - unread,
        "confusion": dict(sorted(confusion.items())),
        "countable_rows": sum(1 for t in truths if t != {None}),
        "counted_rows": len(counted),
        "right_counted_rows": len(right_rows),
        "wrong_counted_titres": wrong,
    }


def evaluate(
    model_dir: Path,
    real_dir: Path,
    precision: str,
    threshold: float,
    decode: RowDecodeSettings | None = None,
) -> list[dict[str, Any]]:
    letters = readings((real_dir / "SOURCES.md").read_text())
    models: dict[str, WellsModel] = {}
    results = []
    for plate in PLATES:
        if plate.mode not in models:
            models[plate.mode] = WellsModel.load(model_dir, plate.mode, precision)
        results.append(
            score_plate(plate, letters[plate.name], models[plate.mode], real_dir, threshold, decode)
        )
    return results


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    def total(items: list[dict[str, Any]]) -> dict[str, Any]:
        scored = sum(r["scored_wells"] for r in items)
        right = sum(r["right_wells"] for r in items)
        return {
            "scored_wells": scored,
            "right_wells": right,
            "right_share": round(right / scored, 4) if scored else None,
            "unread_wells": sum(r["unread_wells"] for r in items),
            "counted_rows": sum(r["counted_rows"] for r in items),
            "right_counted_rows": sum(r["right_counted_rows"] for r in items),
            "wrong_counted_titres": sum(len(r["wrong_counted_titres"]) for r in items),
        }

    modes = sorted({r["mode"] for r in results})
    return {
        "all": total(results),
        **{m: total([r for r in results if r["mode"] == m]) for m in modes},
    }


def print_table(results: list[dict[str, Any]]) -> None:
    head = ("plate", "mode", "prec", "wells right", "unread", "counted", "right", "wrong titres")
    print(f"-- {results[0]['read'] if results else ''}")
    print("{:32} {:9} {:5} {:>14} {:>6} {:>7} {:>5} {:>12}".format(*head))
    for r in results:
        share = 100 * r["right_wells"] / max(r["scored_wells"], 1)
        wells = f"{r['right_wells']}/{r['scored_wells']} {share:5.1f}%"
        print(
            f"{r['plate']:32} {r['mode']:9} {r['precision']:5} {wells:>14} "
            f"{r['unread_wells']:>6} {r['counted_rows']:>7} {r['right_counted_rows']:>5} "
            f"{len(r['wrong_counted_titres']):>12}"
        )
    for key, t in summary(results).items():
        share = 100 * (t["right_share"] or 0)
        print(
            f"{key:9}: {t['right_wells']}/{t['scored_wells']} wells right ({share:.1f} %), "
            f"{t['unread_wells']} unread, {t['counted_rows']} rows counted, "
            f"{t['right_counted_rows']} right, {t['wrong_counted_titres']} wrong counted titres"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.evaluate_real",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "hi-wells")
    parser.add_argument("--real-dir", type=Path, default=DEFAULT_REAL_DIR)
    parser.add_argument("--precision", choices=(*PRECISIONS, "both"), default="both")
    parser.add_argument("--threshold", type=float, default=DEFAULT_MIN_CONFIDENCE)
    parser.add_argument("--read", choices=(*READS, "both"), default="both")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.real_dir / "SOURCES.md").is_file():
        print(f"no real plate photos at {args.real_dir} (SOURCES.md missing): nothing to score")
        return 0
    if not (args.model / "manifest.json").is_file():
        print(f"error: {args.model} holds no manifest.json", file=sys.stderr)
        return 2
    precisions = PRECISIONS if args.precision == "both" else (args.precision,)
    reads = list(READS) if args.read == "both" else [args.read]
    report: dict[str, Any] = {}
    for precision in precisions:
        for read in reads:
            results = evaluate(args.model, args.real_dir, precision, args.threshold, READS[read])
            print_table(results)
            key = precision if args.read != "both" else f"{precision} {read}"
            report[key] = {"plates": results, "summary": summary(results)}
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
