"""Mosquitto's broker files, generated from the device registry, and the listener part of
`mosquitto.conf` that uses them.

- Devices connect on the device listener, which authenticates and authorises them with
  Mosquitto's dynamic-security plugin (`mosquitto_dynamic_security.so`, shipped in Debian's
  `mosquitto` package) from a JSON file this module renders (:func:`render_dynsec_config`).
  The plugin checks subscriptions as well as publishes and deliveries: a device may subscribe
  only to the topics it may read under its own prefix, so `#`, another device's topics and
  every `$share/...` filter get SUBACK "not authorised" (0x87). Mosquitto 2.0's `acl_file`
  checks no subscription at all (every filter is granted; only delivery is checked), which let
  a device join the ingest's shared subscription and have the broker drop the shares it may
  not read.
- The ingest connects on its own loopback listener with `password_file` and `acl_file`
  (:func:`render_password_file`, :func:`render_acl_file`).

What a device may do is one table, :data:`DEVICE_TOPICS`; both renderers read it.

Passwords use Mosquitto 2.0's PBKDF2-SHA512 format (`$7$<iterations>$<b64 salt>$<b64 hash>`,
the format `mosquitto_passwd` writes); the dynamic-security file holds the same three parts as
separate fields, so the broker verifies them without our help. The files are rewritten
atomically. The broker rereads `password_file` and `acl_file` on SIGHUP, but the
dynamic-security plugin of Mosquitto 2.0 reads its file only when the broker starts: a change
of devices therefore restarts the broker (`systemd/microplate-mosquitto-reload.service`;
sessions and queued messages are persisted, devices reconnect).

Who may be which client (issue 17): on the device listener the broker replaces any client id
with the account's user name (`site.device`, always one dot), so no device can take over
another device's or the ingest's session. The ingest's client ids never contain a dot
(`cloud.ingest.worker`), and its share group is derived from its password
(:func:`ingest_share_group`), a second line behind the subscription check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.topics import TOPIC_ROOT, Leaf, Topics

logger = logging.getLogger(__name__)

ITERATIONS = 101  # mosquitto_passwd's default
SALT_BYTES = 12
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")

Access = Literal["read", "write"]
# Everything a device may do on the broker, under its own prefix microplate/v1/<site>/<device>/
# and nowhere else: "write" = publish there; "read" = subscribe to it and receive from it. The
# ingest may write every topic a device reads and read every topic. One line per topic.
DEVICE_TOPICS: tuple[tuple[Leaf, Access], ...] = (
    ("runs", "write"),
    ("status", "write"),  # its last will too
    ("acks", "read"),
    ("config", "read"),
    ("model", "read"),  # retained model-rollout notices (docs/ota.md)
)

DYNSEC_PLUGIN_NAME = "mosquitto_dynamic_security.so"
_DYNSEC_ACLS: dict[Access, tuple[str, ...]] = {
    "write": ("publishClientSend",),
    "read": ("subscribePattern", "publishClientReceive"),
}


def hash_mqtt_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mqtt_password(password: str, encoded: str) -> bool:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    iterations, salt, expected = int(parts[2]), base64.b64decode(parts[3]), parts[4]
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return hmac.compare_digest(base64.b64encode(digest).decode(), expected)


@dataclass(frozen=True)
class BrokerAccount:
    username: str
    password_hash: str
    site: str
    device: str


def render_password_file(accounts: Iterable[BrokerAccount], *, service: list[str]) -> str:
    lines = list(service)
    for account in accounts:
        _check_safe(account.username)
        lines.append(f"{account.username}:{account.password_hash}")
    return "".join(f"{line}\n" for line in lines)


def render_acl_file(accounts: Iterable[BrokerAccount], *, ingest_username: str | None) -> str:
    """Each device gets only its own subtree, and there only what its side of the protocol
    needs: it writes `runs` and `status` (its last will included), it reads `acks`, `config`
    and `model` (the model rollout notice). It can neither forge the cloud's acks, desired
    config or model notices (even its own) nor read back what it sent. The ingest service
    account reads all and writes acks, config and model notices."""
    out = ["# Generated by microplate-cloud from the device registry. Do not edit.\n"]
    if ingest_username:
        _check_safe(ingest_username)
        out.append(f"\nuser {ingest_username}\ntopic read {TOPIC_ROOT}/#\n")
        out.extend(
            f"topic write {Topics.subscription(leaf)}\n"
            for leaf, access in DEVICE_TOPICS
            if access == "read"
        )
    for account in accounts:
        topics = _device_topics(account)
        out.append(f"\nuser {account.username}\n")
        out.extend(f"topic {access} {topics.topic(leaf)}\n" for leaf, access in DEVICE_TOPICS)
    return "".join(out)


def render_dynsec_config(accounts: Iterable[BrokerAccount]) -> str:
    """The dynamic-security plugin's JSON for the device listener: one client per device with
    its stored password hash, and one role holding exactly :data:`DEVICE_TOPICS` under the
    device's prefix. Everything else is denied by default, subscriptions included (only
    unsubscribing is always allowed). There is no admin client, so nobody can change the
    plugin's state over `$CONTROL`; the cloud rewrites this file instead."""
    clients: list[dict[str, object]] = []
    roles: list[dict[str, object]] = []
    for account in accounts:
        topics = _device_topics(account)
        iterations, salt, digest = _split_hash(account.password_hash, account.username)
        rolename = f"device-{account.username}"
        clients.append(
            {
                "username": account.username,
                "textName": f"{account.site}/{account.device}",
                "password": digest,
                "salt": salt,
                "iterations": iterations,
                "roles": [{"rolename": rolename}],
            }
        )
        acls: list[dict[str, object]] = []
        for leaf, access in DEVICE_TOPICS:
            topic = topics.topic(leaf)
            acls.extend(
                {"acltype": kind, "topic": topic, "allow": True} for kind in _DYNSEC_ACLS[access]
            )
        roles.append({"rolename": rolename, "acls": acls})
    config = {
        "clients": clients,
        "roles": roles,
        "groups": [],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }
    return json.dumps(config, indent=1) + "\n"


def dynsec_plugin_path() -> Path:
    """Where Debian's `mosquitto` package installs the dynamic-security plugin."""
    for candidate in sorted(Path("/usr/lib").glob(f"*/{DYNSEC_PLUGIN_NAME}")):
        return candidate
    fallback = Path("/usr/lib/mosquitto") / DYNSEC_PLUGIN_NAME
    if fallback.exists():
        return fallback
    raise FileNotFoundError(f"{DYNSEC_PLUGIN_NAME} not found (is Mosquitto 2.0 installed?)")


def _device_topics(account: BrokerAccount) -> Topics:
    for part in (account.username, account.site, account.device):
        _check_safe(part)
    return Topics(account.site, account.device)


def _split_hash(encoded: str, username: str) -> tuple[int, str, str]:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        raise ValueError(f"broker password of {username!r} is not a $7$ PBKDF2-SHA512 hash")
    return int(parts[2]), parts[3], parts[4]


def ingest_share_group(password: str) -> str:
    """The ingest workers' `$share` group: unguessable without the ingest password."""
    tag = hmac.new(password.encode("utf-8"), b"microplate-ingest-share-group", "sha256")
    return f"ingest-{tag.hexdigest()[:32]}"


@dataclass(frozen=True)
class TlsFiles:
    certfile: Path
    keyfile: Path
    cafile: Path


def render_listeners(
    *,
    password_file: Path,
    acl_file: Path,
    dynsec_file: Path,
    service_port: int,
    device_port: int,
    device_bind: str = "",
    tls: TlsFiles | None = None,
    dynsec_plugin: Path | None = None,
) -> str:
    """The `mosquitto.conf` lines that bind accounts to listeners (the rest is deployment
    tuning; `ansible/roles/microplate_cloud/templates/mosquitto.conf.j2` renders the same)."""
    plugin = dynsec_plugin or dynsec_plugin_path()
    device = [
        "# Devices: accounts and ACLs (subscriptions included) from the dynamic-security",
        "# plugin; the client id is always the user name, so a device cannot take over",
        "# another client's session (nor the ingest's, whose ids have no dot).",
        f"listener {device_port}{(' ' + device_bind) if device_bind else ''}",
        "protocol mqtt",
        "allow_anonymous false",
        f"plugin {plugin}",
        f"plugin_opt_config_file {dynsec_file}",
        "use_username_as_clientid true",
    ]
    if tls is not None:
        device += [
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            f"cafile {tls.cafile}",
            "tls_version tlsv1.2",
        ]
    lines = [
        "per_listener_settings true",
        "",
        "# The ingest workers, on loopback only (still authenticated).",
        f"listener {service_port} 127.0.0.1",
        "protocol mqtt",
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "",
        *device,
    ]
    return "".join(f"{line}\n" for line in lines)


def _check_safe(part: str) -> None:
    # A newline or wildcard in a name would let one entry widen another's rights.
    if not _SAFE.match(part) or part in {"+", "#"}:
        raise ValueError(f"unsafe name for the broker files: {part!r}")


def write_atomic(path: Path, content: str, *, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reload_broker(pid_file: Path | None) -> bool:
    """SIGHUP the broker named by the pid file; False when there is nothing to signal."""
    if pid_file is None:
        return False
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        logger.warning("broker pid file %s unreadable; broker not reloaded", pid_file)
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        logger.warning("broker pid %s from %s is not running", pid, pid_file)
        return False
    logger.info("broker %s told to reload its password and ACL files", pid)
    return True
