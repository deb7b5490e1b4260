"""Child process for the crash test: runs the appliance over a watched folder until killed.

`python -m tests.edge.crash_child SETTINGS.json` prints READY once started, then idles.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edge.app import Appliance
from edge.config import EdgeSettings


def main() -> None:
    settings = EdgeSettings(**json.loads(Path(sys.argv[1]).read_text()))
    app = Appliance(settings)
    app.start()
    print("READY", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
