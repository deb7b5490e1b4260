"""The Python that has torch for the training tests: torch never enters the app's venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_REASON = "torch is not installed here, nor in $MICROPLATE_TRAIN_PYTHON or .venv-train"


def train_python() -> str | None:
    """A Python that has torch: this one, $MICROPLATE_TRAIN_PYTHON, or the repo's .venv-train."""
    candidates = [
        sys.executable,
        os.environ.get("MICROPLATE_TRAIN_PYTHON", ""),
        str(REPO / ".venv-train" / "bin" / "python"),
    ]
    for python in candidates:
        if python and Path(python).exists():
            probe = subprocess.run(
                [python, "-c", "import torch, onnx"], capture_output=True, check=False
            )
            if probe.returncode == 0:
                return python
    return None


def run_train_python(
    python: str, args: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run `python args...` from the repository root with the repository on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [python, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
