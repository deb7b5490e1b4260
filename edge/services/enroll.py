"""`microplate-edge enroll BUNDLE`: turn the cloud's enrollment bundle into this appliance's
identity, sync settings and credential files.

- The bundle (`core.enrollment.EnrollmentBundle`) is validated: format, slugs, the MQTT user
  that must belong to its site/device, and its expiry.
- A bundle for another site than the one this appliance is set up for is refused (`--site`, or
  the `site_id` already in the settings file); so is an expired one, unless this appliance is
  already enrolled with exactly that bundle (re-running enroll, as Ansible does, changes
  nothing).
- The secrets go into files of their own, mode 0600 in a 0700 folder (systemd credentials in
  production: `--credentials-path` names where the service will see them), never into the
  settings file, which gets `site_id`, `device_id` (the bundle's slugs: the identity the
  broker ACL expects) and the `sync` section.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.enrollment import EnrollmentBundle

# File names inside the credentials folder (and systemd credential names).
MQTT_PASSWORD_FILE = "mqtt-password"  # noqa: S105  (a file name)
DEVICE_TOKEN_FILE = "device-token"  # noqa: S105
BROKER_CA_FILE = "broker-ca.pem"
# Settings from the bundle replace these keys of an existing `sync` section.
_REPLACED = ("password", "device_token", "ca_cert_file", "client_id")


class EnrollError(Exception):
    """The bundle cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Enrolled:
    bundle: EnrollmentBundle
    config_path: Path
    credentials_dir: Path
    changed: bool
    previous_identity: tuple[str, str] | None


def read_bundle(source: str) -> EnrollmentBundle:
    """Parse a bundle file (or '-' for stdin) into the validated model."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise EnrollError(f"The bundle {source} cannot be read: {exc.strerror}.") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise EnrollError(
            f"{source} is not an enrollment bundle (not JSON). Download it again from the "
            "dashboard's devices page or from `microplate-cloud provision-device`."
        ) from None
    try:
        return EnrollmentBundle.model_validate(data)
    except ValidationError as exc:
        # Field names and messages only: the input values may be secrets.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ())) or 'bundle'}: {err.get('msg')}"
            for err in exc.errors(include_input=False)
        )
        raise EnrollError(f"{source} is not a valid enrollment bundle: {problems}.") from None


def enroll(
    bundle: EnrollmentBundle,
    *,
    config_path: Path,
    credentials_dir: Path | None = None,
    credentials_path: Path | None = None,
    site: str | None = None,
    base_path: Path | None = None,
    now: datetime | None = None,
) -> Enrolled:
    """Write the credential files and the settings; refuse a bundle this appliance must not use.

    `base_path`: start from that settings file instead of `config_path`'s own content (an
    installer renders the base, enroll adds the enrollment; re-running changes nothing)."""
    current = _load_config(config_path)
    config = _load_config(base_path) if base_path is not None else current
    expected_site = site or config.get("site_id")
    if expected_site and expected_site != bundle.site:
        raise EnrollError(
            f"This bundle is for site {bundle.site!r} but this appliance belongs to site "
            f"{expected_site!r}. Ask for the bundle made for {expected_site!r}, or name the new "
            f"site with --site {bundle.site} if the appliance has really moved."
        )
    cred_dir = credentials_dir or config_path.parent / "credentials"
    # The CA file is always written (empty without a CA) so a service can always load it.
    secrets = {
        MQTT_PASSWORD_FILE: bundle.mqtt_password,
        DEVICE_TOKEN_FILE: bundle.device_token,
        BROKER_CA_FILE: bundle.ca_cert or "",
    }
    already = all(_read(cred_dir / name) == value for name, value in secrets.items())
    if bundle.expired(now) and not already:
        assert bundle.expires_at is not None
        raise EnrollError(
            f"This bundle expired at {bundle.expires_at.isoformat(timespec='minutes')}. "
            "Ask an administrator to revoke the device and provision it again for a fresh one."
        )
    seen = (config.get("site_id"), config.get("device_id"))
    previous: tuple[str, str] | None = None
    if seen[0] and seen[1] and seen != (bundle.site, bundle.device):
        previous = (str(seen[0]), str(seen[1]))
    changed = False
    cred_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, value in secrets.items():
        if _read(cred_dir / name) != value:
            _write_private(cred_dir / name, value)
            changed = True
    refer = credentials_path or cred_dir
    sync = {k: v for k, v in dict(config.get("sync") or {}).items() if k not in _REPLACED}
    sync.update(
        {
            "enabled": True,
            "broker_url": bundle.broker_url,
            "username": bundle.mqtt_username,
            "password_file": str(refer / MQTT_PASSWORD_FILE),
            "api_base_url": bundle.api_base_url,
            "device_token_file": str(refer / DEVICE_TOKEN_FILE),
        }
    )
    if bundle.ca_cert:
        sync["ca_cert_file"] = str(refer / BROKER_CA_FILE)
    new = {**config, "site_id": bundle.site, "device_id": bundle.device, "sync": sync}
    _check_sync(sync)
    if new != current:
        _write_json(config_path, new)
        changed = True
    return Enrolled(bundle, config_path, cred_dir, changed, previous)


def _check_sync(sync: dict[str, Any]) -> None:
    from edge.config import SyncSettings, describe_validation_error

    try:
        SyncSettings.model_validate(sync)
    except ValidationError as exc:
        raise EnrollError(
            "The bundle gives sync settings this appliance cannot use:\n"
            + describe_validation_error(exc)
        ) from None


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EnrollError(f"The settings file {path} cannot be read: {exc.strerror}.") from None
    except ValueError:
        raise EnrollError(f"The settings file {path} is not valid JSON; fix it first.") from None
    if not isinstance(data, dict):
        raise EnrollError(f"The settings file {path} must hold a JSON object.")
    return data


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _write_private(path: Path, text: str) -> None:
    _atomic(path, text, 0o600)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    mode = 0o640
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, json.dumps(data, indent=2) + "\n", mode)


def _atomic(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary(result: Enrolled) -> str:
    b = result.bundle
    lines = [
        f"Enrolled as {b.site}/{b.device} (cloud device {b.device_id}).",
        f"Settings: {result.config_path}; credentials: {result.credentials_dir} (mode 0600).",
        f"Broker {b.broker_url}, API {b.api_base_url}.",
    ]
    if result.previous_identity is not None:
        old = "/".join(result.previous_identity)
        lines.append(f"The identity changed from {old}: restart the appliance.")
    if not result.changed:
        lines.append("Nothing changed: already enrolled with this bundle.")
    return "\n".join(lines)
