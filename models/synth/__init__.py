"""Synthetic HI plate generator: photos of 96-well plates with exact per-well labels.

numpy + OpenCV only, so the runtime and the demo can use it without torch. Deterministic: plate
`index` of stream `seed` is always the same image, whatever else is generated.
"""

from __future__ import annotations

from models.synth.patterns import CLASSES, true_endpoint
from models.synth.render import PlateSample, render_plate

# Bump when the rendering changes in a way that changes images for the same seed.
GENERATOR_VERSION = "1.0.0"

__all__ = ["CLASSES", "GENERATOR_VERSION", "PlateSample", "render_plate", "true_endpoint"]
