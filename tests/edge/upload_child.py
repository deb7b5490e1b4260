"""Child process for the spool test: accepts uploads whose inference never finishes, then waits
to be killed. `python -m tests.edge.upload_child SETTINGS.json N`."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from edge.app import Appliance
from edge.config import EdgeSettings
from edge.detect.base import create_detector
from edge.detect.settings import DetectorSettings
from edge.schemas import RunRequest
from tests.edge.plates import PLATE_A, jpeg, plate_image


class Stuck:
    """A detector whose inference hangs (the process is killed meanwhile)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.model, self.backend, self.settings = (
            inner,
            inner.model,
            inner.backend,
            inner.settings,
        )

    def detect(self, image: np.ndarray) -> Any:
        threading.Event().wait()


def main() -> None:
    settings = EdgeSettings(**json.loads(Path(sys.argv[1]).read_text()))
    detector = create_detector(TypeAdapter(DetectorSettings).validate_python(settings.detector))
    app = Appliance(settings, detector=Stuck(detector))
    app.start()
    for i in range(int(sys.argv[2])):
        data = jpeg(plate_image(PLATE_A, seed=500 + i))
        ticket = app.intake.submit_image(data, f"u{i}.jpg", RunRequest(sample_number="U-1"))
        print(ticket.id, flush=True)
    print("QUEUED", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
