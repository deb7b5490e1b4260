"""Write the bundled demo plates: `python -m models.synth.samples --out models/samples`.

Six generator v2 plates from their own seed stream (7): three read tilted (V-bottom tear-drops)
and three untilted (U-bottom buttons and mats), a well pitch of 60-110 px, each a JPEG of at most
250 KB with its calibration (old format), its ground truth and, in ``index.json``, its
``reading`` mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from models.synth.dataset import truth_record
from models.synth.render2 import GENERATOR_V2_VERSION, render_plate_v2

logger = logging.getLogger(__name__)

SAMPLE_SEED = 7
MAX_BYTES = 250_000
SAMPLES: tuple[tuple[int, str, float], ...] = (
    # (index, reading mode, well pitch in px): HI patterns on several lights, chosen from the
    # stream's first dozen plates (variations.pattern/backlight in each truth file).
    (8, "tilted", 110.0),
    (7, "untilted", 100.0),
    (9, "tilted", 90.0),
    (2, "untilted", 80.0),
    (1, "tilted", 70.0),
    (9, "untilted", 60.0),
)


def write_samples(out: Path) -> list[dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for n, (index, mode, pitch) in enumerate(SAMPLES, start=1):
        quality = 90
        sample = render_plate_v2(
            SAMPLE_SEED, index, mode=mode, pitch_px=pitch, jpeg_quality=quality
        )
        # The same plate at a lower quality until it fits the size budget.
        while len(sample.jpeg) > MAX_BYTES and quality > 40:
            quality -= 5
            sample = render_plate_v2(
                SAMPLE_SEED, index, mode=mode, pitch_px=pitch, jpeg_quality=quality
            )
        w, h = sample.width, sample.height
        stem = f"plate-{n:02d}"
        (out / f"{stem}.jpg").write_bytes(sample.jpeg)
        (out / f"{stem}.calibration.json").write_text(
            json.dumps(sample.calibration, indent=2) + "\n"
        )
        record = truth_record(sample, SAMPLE_SEED, index, f"{stem}.jpg")
        record["generator_version"] = GENERATOR_V2_VERSION
        record["reading"] = mode
        (out / f"{stem}.truth.json").write_text(json.dumps(record, indent=1) + "\n")
        entries.append(
            {
                "image": f"{stem}.jpg",
                "calibration": f"{stem}.calibration.json",
                "truth": f"{stem}.truth.json",
                "size": f"{w}x{h}",
                "reading": mode,
            }
        )
        logger.info(
            "%s: %s, %dx%d, %d KB, quality %d", stem, mode, w, h, len(sample.jpeg) // 1024, quality
        )
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
