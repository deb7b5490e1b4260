"""`microplate-edge analyze IMAGE...`: read plates from files, no server, no database.

Detector settings come from the appliance's settings when they load (so a Jetson uses its
TensorRT engine), else ONNX Runtime on the shipped model; `--model` and `--backend` override.
The grid comes from `--calibration FILE` (the old system's file or ours), else the appliance's
saved calibration when that file exists, else a uniform grid over each frame. With a grid and
the well classifier (`models/hi-wells`, or `--wells-model DIR`) each well is classified from
its crop in the reading mode (`--reading`, else the calibration's, else the appliance's
setting, else tilted); without a grid the detector reads the plate. Every image gets the
plate-quality gate's verdict (`needs_review`, `review_reasons`).

Exit status: 0 all images read; 1 at least one image failed (the others were still read);
2 nothing could start (bad model, calibration or options).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import TypeAdapter, ValidationError

from core.calibration import CalibrationError, CalibrationGrid
from core.titre import DilutionSettings
from edge.detect.errors import DetectorError, ImageDecodeError
from edge.detect.reader import PlateReader, PlateReading
from edge.detect.settings import DetectorSettings

logger = logging.getLogger(__name__)

SYMBOLS = {"flowing": "+", "agglutinated": "-", "invalid": "x", "unread": "?"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `analyze` on the CLI's subparsers (the CLI calls `run(args)`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "analyze",
        help="read plate images and print well calls and titres (no server needed)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="plate image files")
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="grid file (the old system's roi_calibration.json or a saved one)",
    )
    parser.add_argument(
        "--model", type=Path, metavar="DIR", help="model directory (default: the shipped model)"
    )
    parser.add_argument(
        "--backend", choices=["onnx", "tensorrt"], help="detector backend (default: settings)"
    )
    parser.add_argument(
        "--engine-cache", type=Path, metavar="DIR", help="TensorRT engine cache directory"
    )
    parser.add_argument(
        "--class-map",
        action="append",
        default=[],
        metavar="NAME=STATE",
        help="map a model class to flowing/agglutinated/invalid (repeatable), for your own model",
    )
    parser.add_argument(
        "--reading",
        choices=["tilted", "untilted"],
        help="reading mode: tilted V-bottom tear-drops or untilted U-bottom buttons/mats "
        "(default: the calibration's, else the appliance setting, else tilted)",
    )
    parser.add_argument(
        "--wells-model",
        type=Path,
        metavar="DIR",
        help="well classifier directory (default: models/hi-wells when present)",
    )
    parser.add_argument(
        "--detector-only",
        action="store_true",
        help="read with the detector even when a grid and the classifier are there (the old way)",
    )
    parser.add_argument(
        "--max-unread",
        type=float,
        metavar="FRACTION",
        help="plate-quality gate: share of unread wells above which a read needs review",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=0.5,
        help="well-call threshold; weaker wells are 'unread' (default 0.5)",
    )
    parser.add_argument(
        "--start-dilution", type=int, default=10, help="dilution of column 1 (default 10)"
    )
    parser.add_argument("--factor", type=int, default=2, help="dilution factor (default 2)")
    parser.set_defaults(handler=run)
    return parser


def _appliance_settings() -> Any | None:
    """The appliance's settings when they load here; analyze works without them."""
    try:
        from edge.config import EdgeSettings
    except ImportError:
        return None
    try:
        return EdgeSettings()
    except (ValidationError, ValueError, OSError) as exc:
        logger.info("appliance settings not used (%s)", str(exc).splitlines()[0])
        return None


def detector_settings(args: argparse.Namespace, appliance: Any | None) -> Any:
    raw: dict[str, Any] = {"type": "onnx"}
    configured = getattr(appliance, "detector", None)
    if configured is not None and getattr(configured, "type", None) in ("onnx", "tensorrt"):
        # what the configuration named, as it named it (defaults stay defaults)
        raw = {**configured.model_dump(exclude_unset=True), "type": configured.type}
    if args.backend and args.backend != raw.get("type"):
        keep = {
            "model_dir",
            "class_map",
            "min_confidence",
            "iou_threshold",
            "threads",
            "wells_model_dir",
            "review",
        }
        raw = {k: v for k, v in raw.items() if k in keep}
        raw["type"] = args.backend
    if args.model is not None:
        raw["model_dir"] = args.model
    for item in args.class_map:
        name, sep, state = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--class-map {item!r} is not NAME=STATE")
        raw.setdefault("class_map", {})
        raw["class_map"] = {**raw["class_map"], name.strip(): state.strip().lower()}
    if getattr(args, "detector_only", False):
        raw["wells_model_dir"] = None
    elif getattr(args, "wells_model", None) is not None:
        raw["wells_model_dir"] = args.wells_model
    if getattr(args, "max_unread", None) is not None:
        raw["review"] = {**dict(raw.get("review") or {}), "max_unread_fraction": args.max_unread}
    if args.engine_cache is not None:
        if raw["type"] != "tensorrt":
            raise ValueError("--engine-cache only applies to --backend tensorrt")
        raw["engine_cache_dir"] = args.engine_cache
    return TypeAdapter(DetectorSettings).validate_python(raw)


def reading_mode(args: argparse.Namespace, grid: CalibrationGrid | None, appliance: Any) -> Any:
    """--reading, else the calibration's, else the appliance's runtime default, else tilted."""
    if args.reading:
        return args.reading
    if grid is not None and grid.reading:
        return grid.reading
    runtime = getattr(appliance, "runtime", None)
    return getattr(runtime, "reading", None) or "tilted"


def load_grid(
    args: argparse.Namespace, appliance: Any | None
) -> tuple[CalibrationGrid | None, str]:
    if args.calibration is not None:
        return _read_grid(args.calibration), f"file {args.calibration}"
    saved = getattr(appliance, "resolved_calibration_path", None)
    if isinstance(saved, Path) and saved.is_file():
        return _read_grid(saved), f"saved {saved}"
    return None, "uniform"


def _read_grid(path: Path) -> CalibrationGrid:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration file {path}: {exc}") from exc
    try:
        return CalibrationGrid.from_json(text)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from exc


def render_table(image: Path, reading: PlateReading, out: TextIO) -> None:
    fmt = reading.grid.plate_format
    model = reading.model
    print(
        f"{image}  {reading.image_width}x{reading.image_height}  model {model['name']} "
        f"{model['version']} ({reading.backend})  grid: {reading.grid_source}  "
        f"{reading.timings_ms['total']:.0f} ms",
        file=out,
    )
    how = f"classifier, {reading.reading}" if reading.reader == "classifier" else "detector"
    print(f"  read by: {how}", file=out)
    if reading.needs_review:
        print(
            f"  NEEDS REVIEW ({', '.join(reading.review_reasons)}): no row is counted",
            file=out,
        )
    header = "     " + "".join(f"{c:>3}" for c in fmt.col_labels) + "   end  titre  flags"
    print(header, file=out)
    for row in reading.rows:
        cells = "".join(
            f"{SYMBOLS[reading.wells[fmt.well_id(row.row, c)].state]:>3}" for c in range(fmt.cols)
        )
        titre = "-" if row.titre is None else str(row.titre)
        flags = ",".join(row.flags) + ("" if row.counted else " (not counted)")
        line = f"  {row.label}  {cells}   {row.endpoint:>3}  {titre:>5}  {flags}"
        print(line.rstrip(), file=out)
    flagged = [f"{w}:{','.join(c.flags)}" for w, c in reading.wells.items() if c.flags]
    if flagged:
        print(f"  well flags: {' '.join(flagged)}", file=out)
    stats = reading.statistics
    gmt = "-" if stats.gmt is None else f"{stats.gmt:.1f}"
    excluded = ", ".join(f"{k} {v}" for k, v in stats.excluded.items()) or "none"
    print(f"  N {stats.n}  GMT {gmt}  excluded: {excluded}", file=out)
    print("  + flowing  - agglutinated  x invalid  ? unread", file=out)
    print(file=out)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    from edge.detect.base import create_detector

    appliance = _appliance_settings()
    try:
        settings = detector_settings(args, appliance)
        grid, grid_source = load_grid(args, appliance)
        dilution = DilutionSettings(start_dilution=args.start_dilution, factor=args.factor)
        if not 0.0 <= args.min_confidence <= 1.0:
            raise ValueError(f"--min-confidence {args.min_confidence} must be between 0 and 1")
    except (ValidationError, CalibrationError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    from edge.detect.classifier import create_classifier

    try:
        detector = create_detector(settings)
    except DetectorError as exc:
        print(f"error: the detector cannot start: {exc}", file=err)
        return 2
    try:
        wells = create_classifier(settings) if grid is not None else None
    except DetectorError as exc:
        detector.close()
        print(f"error: the well classifier cannot start: {exc}", file=err)
        return 2
    failed = 0
    try:
        reader = PlateReader(
            detector,
            grid=grid,
            grid_source=grid_source,
            min_confidence=args.min_confidence,
            dilution=dilution,
            wells=wells,
            reading=reading_mode(args, grid, appliance),
        )
        if args.reading and grid is not None:
            reader.reading = args.reading  # the command line wins over the calibration
        for image in args.images:
            try:
                reading = reader.read_file(image)
            except (ImageDecodeError, DetectorError) as exc:
                failed += 1
                if args.json:
                    print(json.dumps({"image": str(image), "error": str(exc)}), file=out)
                else:
                    print(f"{image}: error: {exc}", file=err)
                continue
            if args.json:
                print(json.dumps({"image": str(image), **reading.to_dict()}), file=out)
            else:
                render_table(image, reading, out)
            out.flush()
    except DetectorError as exc:
        print(f"error: {exc}", file=err)
        return 2
    finally:
        detector.close()
        if wells is not None:
            wells.close()
    if failed:
        print(f"{failed} of {len(args.images)} image(s) could not be read", file=err)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="microplate-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
