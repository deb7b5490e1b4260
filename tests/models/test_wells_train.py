"""The training script's loss weights and its refusal of a bad `--invalid-weight`, run in the
training venv (torch never enters the app's venv; `.ci/run` builds `.venv-train`)."""

from __future__ import annotations

import json

import pytest

from tests.models.trainvenv import SKIP_REASON, run_train_python, train_python

PROBE = """
import json, numpy as np
from models.wells.dataset import CLASSES
from models.wells.train import loss_weights
counts = np.array([8000, 8000, 2000, 8000])
out = {"classes": list(CLASSES), "plain": loss_weights(counts).tolist(),
       "doubled": loss_weights(counts, invalid_weight=2.0).tolist()}
try:
    loss_weights(counts, invalid_weight=0.0)
    out["zero"] = "accepted"
except ValueError as exc:
    out["zero"] = str(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def python() -> str:
    found = train_python()
    if found is None:
        pytest.skip(SKIP_REASON)
    return found


def test_loss_weights_favour_rare_classes_and_scale_invalid(python: str) -> None:
    done = run_train_python(python, ["-c", PROBE], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    invalid = got["classes"].index("invalid")
    plain, doubled = got["plain"], got["doubled"]
    assert plain[invalid] == pytest.approx(2 * plain[0])  # sqrt(8000 / 2000)
    assert doubled[invalid] == pytest.approx(2 * plain[invalid])
    others = [i for i in range(len(plain)) if i != invalid]
    assert [doubled[i] for i in others] == pytest.approx([plain[i] for i in others])
    assert "positive" in got["zero"]


def test_a_non_positive_invalid_weight_is_refused(python: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ["-m", "models.wells.train", "--mode", "tilted", "--out", str(tmp_path)]
    done = run_train_python(python, [*args, "--invalid-weight", "-1"], timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--invalid-weight must be positive" in done.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was written
