"""`microplate-cloud models keygen|publish|notify`: the admin's side of the model registry.

The signing key is a file on the admin's machine (PEM, mode 600). It is read by ``publish``
only, never stored in the database, object storage or a log line; devices get the public key
(one base64 line) from Ansible (`microplate_edge_model_public_key`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cloud.settings import CloudSettings
from core.ota import (
    ArtefactFile,
    GateReport,
    ModelManifest,
    encode_signed,
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_text,
    sign_manifest,
)

logger = logging.getLogger(__name__)

MODES = ("tilted", "untilted")


class ModelsCliError(Exception):
    """Printed as `error: ...`, exit 2."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="model registry: signing key, publish, notify devices")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    keygen = msub.add_parser("keygen", help="make the ed25519 signing key (prints the public key)")
    keygen.add_argument("--out", required=True, type=Path, help="private key file (mode 600)")
    pub = msub.add_parser("publish", help="sign a release directory, upload it, record it")
    pub.add_argument("--key", required=True, type=Path, help="the private signing key file")
    pub.add_argument("--dir", required=True, type=Path, help="release directory (*.onnx)")
    pub.add_argument("--name", default="hi-wells")
    pub.add_argument("--version", required=True)
    pub.add_argument(
        "--plate-format", type=int, action="append", choices=(96, 384), dest="plate_formats"
    )
    pub.add_argument("--notes", default="")
    pub.add_argument(
        "--allow-rejected",
        action="store_true",
        help="publish even though the release's gate report did not accept it",
    )
    msub.add_parser("notify", help="send devices the model notices not yet acknowledged")


def _files(directory: Path) -> tuple[ArtefactFile, ...]:
    out = []
    for path in sorted(directory.glob("*.onnx")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        mode = path.name.split(".")[0]
        out.append(
            ArtefactFile(
                path=path.name,
                sha256=digest,
                size_bytes=path.stat().st_size,
                mode=mode if mode in MODES else None,
                precision="int8" if ".int8." in path.name else "fp32",
            )
        )
    return tuple(out)


def _flat_metrics(doc: Any, prefix: str = "") -> dict[str, float]:
    """Numbers of a manifest's `metrics` section, flattened to dotted names."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.update(_flat_metrics(value, f"{prefix}{key}."))
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        out[prefix.rstrip(".").lower()] = float(doc)
    return out


def build_manifest(args: argparse.Namespace) -> ModelManifest:
    directory: Path = args.dir
    if not directory.is_dir():
        raise ModelsCliError(f"--dir {directory}: not a directory")
    files = _files(directory)
    if not files:
        raise ModelsCliError(f"--dir {directory}: no .onnx file to publish")
    metrics: dict[str, float] = {}
    gate: GateReport | None = None
    base_version = None
    source = directory / "manifest.json"
    if source.exists():
        try:
            doc = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelsCliError(f"{source}: not readable JSON ({exc})") from None
        metrics = _flat_metrics(doc.get("metrics", {}))
        if doc.get("gate") is not None:
            try:
                gate = GateReport.model_validate(doc["gate"])
            except ValidationError as exc:
                raise ModelsCliError(
                    f"{source}: gate report invalid: {exc.errors()[0]['msg']}"
                ) from None
        base_version = doc.get("base_version")
    modes = tuple(m for m in MODES if any(f.mode == m for f in files))
    try:
        return ModelManifest(
            name=args.name,
            version=args.version,
            plate_formats=tuple(args.plate_formats or (96,)),
            modes=modes or MODES,
            files=files,
            metrics=metrics,
            gate=gate,
            base_version=base_version,
            created_at=datetime.now(timezone.utc),
            notes=args.notes,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ModelsCliError(f"release manifest invalid: {where}: {err['msg']}") from None


def _read_key(path: Path) -> bytes:
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ModelsCliError(f"--key {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ModelsCliError(f"--key {path}: readable by others; chmod 600 it")
    return data


def _keygen(args: argparse.Namespace) -> int:
    key = generate_private_key()
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ModelsCliError(f"--out {args.out} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise ModelsCliError(f"--out {args.out}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key))
    print(f"signing key written to {args.out} (keep it offline; it is never uploaded)")
    print(f"key id: {key_id(key)}")
    print(f"public key (microplate_edge_model_public_key): {public_key_text(key)}")
    return 0


def _publish(settings: CloudSettings, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from cloud.crud import audit, ota
    from cloud.db import make_engine, make_sessionmaker, session_scope
    from cloud.storage import ObjectStore, StorageError

    try:
        key = load_private_key(_read_key(args.key))
    except ValueError as exc:
        raise ModelsCliError(f"--key {args.key}: {exc}") from None
    manifest = build_manifest(args)
    if manifest.gate is not None and not manifest.gate.accepted and not args.allow_rejected:
        failed = [c.name for c in manifest.gate.checks if not c.passed]
        raise ModelsCliError(
            f"the evaluation gate rejected {manifest.version} ({', '.join(failed)}); "
            "pass --allow-rejected to publish it anyway"
        )
    signed = sign_manifest(manifest, key)
    prefix = ota.object_prefix(manifest.name, manifest.version)
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            existing = ota.get_release(session, name=manifest.name, version=manifest.version)
            if existing is not None:
                raise ModelsCliError(f"{manifest.name} {manifest.version} is already published")
        store = ObjectStore(settings)
        store.ensure_bucket()
        for f in manifest.files:
            store.put(
                f"{prefix}/{f.path}",
                (args.dir / f.path).read_bytes(),
                content_type="application/octet-stream",
            )
        store.put(
            f"{prefix}/manifest.signed.json",
            encode_signed(signed),
            content_type="application/json",
        )
        with session_scope(make_sessionmaker(engine)) as session:
            release = ota.record_release(session, signed=signed)
            audit.record(
                session,
                action="model.published",
                target_type="model_release",
                target_id=release.id,
                detail={"model": f"{manifest.name} {manifest.version}", "key_id": signed.key_id},
            )
    except (StorageError, ota.OtaError) as exc:
        raise ModelsCliError(str(exc)) from None
    except (BotoCoreError, ClientError) as exc:
        raise ModelsCliError(f"object storage refused the upload: {exc}") from None
    finally:
        engine.dispose()
    print(
        f"published {manifest.name} {manifest.version}: {len(manifest.files)} files, "
        f"manifest sha256 {signed.sha256}, key id {signed.key_id}"
    )
    return 0


def _notify(settings: CloudSettings) -> int:
    from cloud.config_notify import publish_configs
    from cloud.db import make_engine, make_sessionmaker
    from cloud.ota_notify import NotifyError, publish_pending

    engine = make_engine(settings)
    try:
        sessions = make_sessionmaker(engine)
        sent = publish_pending(settings, sessions)
        configs = publish_configs(settings, sessions)
    except NotifyError as exc:
        raise ModelsCliError(str(exc)) from None
    finally:
        engine.dispose()
    print(f"{sent} model notice(s) sent, {configs} desired config(s) sent")
    return 0


def run_models(settings: CloudSettings, args: argparse.Namespace) -> int:
    try:
        if args.models_command == "keygen":
            return _keygen(args)
        if args.models_command == "publish":
            return _publish(settings, args)
        return _notify(settings)
    except ModelsCliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
