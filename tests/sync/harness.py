"""Private servers for the sync tests and bench: a Mosquitto broker and a Postgres cluster.

Both run on free loopback ports with their state in a temporary directory, so a test may kill
them (SIGKILL), restart them or cut them off without touching the machine's shared services.
The broker uses password authentication and an ACL file; passwords are hashed with the cloud's
own `cloud.mqtt_auth.hash_mqtt_password` so the test also proves the broker accepts that format.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@contextlib.contextmanager
def serve_asgi(app: Any, **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield its base URL and
    stop it on leaving (``options``: more ``uvicorn.Config`` settings)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def world_dir(prefix: str) -> Path:
    """A temp dir others (mosquitto, postgres users) may traverse; pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class Mosquitto:
    """One private broker: persistence on, passwords, ACL, queue limits raised."""

    def __init__(
        self,
        workdir: Path,
        *,
        accounts: dict[str, str],
        acl: str,
        port: int | None = None,
        autosave_s: int = 1,
        message_size_limit: int = 1024 * 1024,
    ) -> None:
        from cloud.mqtt_auth import hash_mqtt_password

        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        pw_lines = [f"{user}:{hash_mqtt_password(pw)}\n" for user, pw in accounts.items()]
        (workdir / "passwd").write_text("".join(pw_lines), encoding="utf-8")
        (workdir / "acl").write_text(acl, encoding="utf-8")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            "\n".join(
                [
                    # Run as the invoking user: the files above are ours, not mosquitto's.
                    f"user {pwd.getpwuid(os.getuid()).pw_name}",
                    "per_listener_settings false",
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous false",
                    f"password_file {workdir / 'passwd'}",
                    f"acl_file {workdir / 'acl'}",
                    "persistence true",
                    f"persistence_location {workdir / 'data'}/",
                    f"autosave_interval {autosave_s}",
                    "max_queued_messages 1000000",
                    "max_queued_bytes 0",
                    "max_inflight_messages 10000",
                    f"message_size_limit {message_size_limit}",
                    "persistent_client_expiration 1d",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "",
                ]
            ),
            encoding="utf-8",
        )

    def start(self) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        try:
            wait_port(self.port)
        except TimeoutError:
            self.kill()
            raise RuntimeError(self.log_tail()) from None

    def log_tail(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: whatever was not autosaved is lost, like a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def reload(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)


def pg_bin(name: str) -> str:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / name).exists():
            return str(candidate / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} (PostgreSQL server binaries) is not installed")
    return found


class PgCluster:
    """A private Postgres cluster run as the `postgres` OS user on a free port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.data = root / "pgdata"
        self.sock = root / "sock"
        self._as_postgres = os.getuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, timeout=120)

    def init(self) -> None:
        self.sock.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(
            pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=100"
        )
        self._run(
            pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
            str(self.root / "pg.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "immediate") -> None:
        """`immediate` is a crash as far as Postgres is concerned: recovery on start."""
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    root = world_dir("mp-sync-pg-")
    cluster = PgCluster(root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
