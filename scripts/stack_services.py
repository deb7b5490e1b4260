"""The services `make demo-stack` starts (scripts/demo_stack.py): PostgreSQL (the running
server or a private cluster), SeaweedFS as S3, Mosquitto on the cloud's password and ACL
files; each process logs into the stack's folder and is stopped in reverse order."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


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
