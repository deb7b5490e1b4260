"""Write the bundled demo plates: `python -m models.synth.samples --out models/samples`.

Six plates from their own seed stream (7), four at the old system's 1700x1200 and two at
1280x720, each a JPEG of at most 250 KB with its calibration (old format) and ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from models.synth.dataset import truth_record
from models.synth.render import render_plate

logger = logging.getLogger(__name__)

SAMPLE_SEED = 7
MAX_BYTES = 250_000
SAMPLES: tuple[tuple[int, int, int], ...] = (
    # (index, width, height)
    (0, 1700, 1200),
    (1, 1700, 1200),
    (2, 1700, 1200),
    (3, 1700, 1200),
    (4, 1280, 720),
    (5, 1280, 720),
)


def write_samples(out: Path) -> list[dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for n, (index, w, h) in enumerate(SAMPLES, start=1):
        quality = 90
        sample = render_plate(SAMPLE_SEED, index, resolution=(w, h), jpeg_quality=quality)
        # The same plate at a lower quality until it fits the size budget.
        while len(sample.jpeg) > MAX_BYTES and quality > 40:
            quality -= 5
            sample = render_plate(SAMPLE_SEED, index, resolution=(w, h), jpeg_quality=quality)
        stem = f"plate-{n:02d}"
        (out / f"{stem}.jpg").write_bytes(sample.jpeg)
        (out / f"{stem}.calibration.json").write_text(
            json.dumps(sample.calibration, indent=2) + "\n"
        )
        record = truth_record(sample, SAMPLE_SEED, index, f"{stem}.jpg")
        (out / f"{stem}.truth.json").write_text(json.dumps(record, indent=1) + "\n")
        entries.append(
            {
                "image": f"{stem}.jpg",
                "calibration": f"{stem}.calibration.json",
                "truth": f"{stem}.truth.json",
                "size": f"{w}x{h}",
            }
        )
        logger.info("%s: %dx%d, %d KB, quality %d", stem, w, h, len(sample.jpeg) // 1024, quality)
    (out / "index.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.synth.samples", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("models/samples"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_samples(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
