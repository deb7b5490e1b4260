from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.edge.detect.onnx_models import anchors_last, model_dir


@pytest.fixture
def anchors_model(tmp_path: Path) -> Path:
    """A 64x64 anchors-last model with one flowing box at input (20, 20)-(30, 30)."""
    out = anchors_last([(25.0, 25.0, 10.0, 10.0, 0, 0.9)])
    return model_dir(tmp_path / "model", out)


@pytest.fixture
def plate_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(100, 200, 3), dtype=np.uint8)
