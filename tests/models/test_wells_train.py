"""The training script's loss weights (torch: skipped where the training venv is not used)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from models.wells.dataset import CLASSES
from models.wells.train import loss_weights, main


def test_loss_weights_favour_rare_classes_and_scale_invalid() -> None:
    counts = np.array([8000, 8000, 2000, 8000])
    plain = loss_weights(counts)
    invalid = CLASSES.index("invalid")
    assert plain[invalid] == pytest.approx(2 * plain[0])  # sqrt(8000 / 2000)
    doubled = loss_weights(counts, invalid_weight=2.0)
    assert doubled[invalid] == pytest.approx(2 * plain[invalid])
    others = [i for i in range(len(CLASSES)) if i != invalid]
    assert np.allclose(doubled[others], plain[others])
    with pytest.raises(ValueError, match="positive"):
        loss_weights(counts, invalid_weight=0.0)


def test_a_non_positive_invalid_weight_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["--mode", "tilted", "--out", str(tmp_path), "--invalid-weight", "-1"])
