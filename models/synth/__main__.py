"""`python -m models.synth --out DIR --n 300 --seed 1`: write a YOLO dataset of synthetic plates."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from models.synth import GENERATOR_VERSION
from models.synth.dataset import generate

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.synth", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--n", type=int, default=300, help="number of plates")
    parser.add_argument("--seed", type=int, default=1, help="stream seed (plates are seed+index)")
    parser.add_argument("--start", type=int, default=0, help="first plate index")
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, help="share of plates for the val split"
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="shrink stored photos to at most this many pixels (training sets; labels follow)",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error("--val-fraction must be in [0, 1)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info(
        "generator %s: %d plates, seed %d -> %s", GENERATOR_VERSION, args.n, args.seed, args.out
    )
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("rendering plates", total=args.n)
        for _ in generate(
            args.out,
            args.n,
            args.seed,
            val_fraction=args.val_fraction,
            start=args.start,
            max_side=args.max_side,
        ):
            progress.advance(task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
