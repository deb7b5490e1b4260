"""`make demo-stack` (scripts/demo_stack.py) on this machine, driven like a newcomer would:
start it, open the dashboard URL it prints with the credentials it prints, find the sample
plates and their images, then Ctrl-C and check that everything it started has stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "demo-stack"

pytestmark = [
    pytest.mark.browser, pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.s3, pytest.mark.slow,
]  # fmt: skip


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("demo-stack ended early:\n" + "".join(lines))
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError("demo-stack never said " + repr(marker) + ":\n" + "".join(lines))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_stack_shows_the_plates_in_the_dashboard_and_stops_on_ctrl_c() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-u", "scripts/demo_stack.py", "--api-port", "0", "--edge-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out = "".join(read_until(proc, "plate(s) are in the cloud", timeout=600))
        work = Path(re.search(r"demo stack in (\S+)", out).group(1))  # type: ignore[union-attr]
        url = re.search(r"Dashboard:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        email = re.search(r"sign in:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        password = re.search(r"password:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        assert re.search(r"^6 plate\(s\) are in the cloud", out, re.MULTILINE), out
        children = [int(p) for p in re.findall(r"^pid (\d+)", out, re.MULTILINE)]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(20_000)
            page.goto(url)
            page.get_by_label("E-mail address").fill(email)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/ui/")
            page.goto(url + "samples")
            for sample in ("DEMO-001", "DEMO-002", "DEMO-003"):
                page.get_by_role("link", name=sample).wait_for()
            page.get_by_role("link", name="DEMO-001").click()
            page.wait_for_url("**/ui/samples/*")
            page.locator("a[href^='/ui/runs/']").first.click()
            page.wait_for_url("**/ui/runs/*")
            image = page.locator("img.plate-image")
            image.wait_for()
            page.wait_for_function(
                "() => { const i = document.querySelector('img.plate-image');"
                " return i && i.complete && i.naturalWidth > 0; }"
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "run-from-demo-stack.png"), full_page=True)
            browser.close()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, rest
        assert "stopped everything the demo stack started" in rest
        assert not work.exists()  # its temporary folder is gone
        assert children and not [pid for pid in children if alive(pid)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
