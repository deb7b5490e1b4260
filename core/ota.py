"""Signed model artefacts and the over-the-air rollout messages.

A model release is a directory of files (ONNX graphs, their int8 variants) and a
:class:`ModelManifest` naming each file with its size and sha256, the plate formats and reading
modes it serves, its metrics and the evaluation gate's report. The cloud admin signs the
manifest's canonical bytes (:func:`canonical_bytes`: sorted keys, no spaces, ASCII) with an
ed25519 key that never leaves the admin; devices hold only the public key (from Ansible).

:func:`verify_artefact` is what a device runs on a download before it loads anything: it
refuses (with :class:`ArtefactError` and a short ``reason`` code) a manifest signed by another
key (``wrong_key``), a signature that does not match (``bad_signature``), a model for another
plate format (``plate_format``), a missing file (``missing_file``), a file cut short
(``truncated``), a file of another size or content (``tampered``) and a malformed manifest
(``malformed``).

:func:`version_order` ranks release versions (semantic-version precedence), so a device can
refuse a release that is not newer than the model it runs (anti-rollback: a signed release
stays valid forever, so without this an old, known-bad one could be offered again).

The rollout messages (notice, report, shadow rule) are in :mod:`core.rollout`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from core.wire_types import FreeText, ModelName, ModelVersion, Sha256Hex, ShortText, UtcDatetime

logger = logging.getLogger(__name__)

__all__ = [
    "ArtefactError",
    "ArtefactFile",
    "GateCheck",
    "GateReport",
    "ModelManifest",
    "SignedManifest",
    "canonical_bytes",
    "encode_signed",
    "generate_private_key",
    "is_newer",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_signed",
    "private_key_pem",
    "public_key_text",
    "sign_manifest",
    "verify_artefact",
    "verify_manifest",
    "version_order",
]

MANIFEST_SCHEMA: Literal[1] = 1
MAX_MANIFEST_BYTES = 64 * 1024
MAX_FILE_BYTES = 2 * 1024**3
_CHUNK = 1 << 20

Reason = Literal[
    "malformed", "wrong_key", "bad_signature", "plate_format", "missing_file", "truncated",
    "tampered",
]  # fmt: skip
KeyId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
# One relative file name inside the release directory: no "..", no leading dot, no folders.
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]


class ArtefactError(ValueError):
    """A model artefact the device must not load; ``reason`` says which check refused it."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ArtefactFile(_Model):
    path: FileName
    sha256: Sha256Hex
    size_bytes: int = Field(ge=1, le=MAX_FILE_BYTES)
    # which reading mode and precision the file serves ("tilted", "fp32"), for the loader
    mode: ShortText | None = None
    precision: Literal["fp32", "fp16", "int8"] | None = None


class GateCheck(_Model):
    """One comparison of the evaluation gate: higher is better for ``candidate``/``baseline``."""

    name: MetricName
    candidate: float
    baseline: float
    tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    n: int = Field(default=0, ge=0)
    passed: bool

    @model_validator(mode="after")
    def _consistent(self) -> GateCheck:
        if self.passed != (self.candidate >= self.baseline - self.tolerance):
            raise ValueError(f"passed: does not match candidate/baseline/tolerance of {self.name}")
        return self


class GateReport(_Model):
    """The evaluation gate: the candidate is accepted only if every check passed."""

    accepted: bool
    checks: tuple[GateCheck, ...] = Field(min_length=1, max_length=64)
    baseline_version: ShortText
    notes: FreeText = ""

    @model_validator(mode="after")
    def _consistent(self) -> GateReport:
        if self.accepted != all(c.passed for c in self.checks):
            raise ValueError("accepted: must be true exactly when every check passed")
        return self


class ModelManifest(_Model):
    schema_version: Literal[1] = MANIFEST_SCHEMA
    name: ModelName
    version: ModelVersion
    plate_formats: tuple[Literal[96, 384], ...] = Field(min_length=1, max_length=2)
    modes: tuple[Literal["tilted", "untilted"], ...] = Field(min_length=1, max_length=2)
    files: tuple[ArtefactFile, ...] = Field(min_length=1, max_length=32)
    metrics: dict[MetricName, float] = Field(default_factory=dict, max_length=64)
    gate: GateReport | None = None
    base_version: ModelVersion | None = None
    created_at: UtcDatetime
    notes: FreeText = ""

    @model_validator(mode="after")
    def _unique_files(self) -> ModelManifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("files: each file is listed once")
        return self


class SignedManifest(_Model):
    manifest: ModelManifest
    key_id: KeyId
    signature: Annotated[str, StringConstraints(min_length=86, max_length=88)]

    @property
    def sha256(self) -> str:
        """The release's identity: sha256 of the canonical manifest bytes."""
        return hashlib.sha256(canonical_bytes(self.manifest)).hexdigest()


def canonical_bytes(manifest: ModelManifest) -> bytes:
    """The bytes that are signed: JSON with sorted keys, no whitespace, ASCII only."""
    return json.dumps(
        manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


# --- keys ---------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key must be an ed25519 key")
    return key


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The public key as one line: base64 of its 32 raw bytes (what Ansible hands devices)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the model public key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"the model public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A short fingerprint that says which key signed a manifest (not a secret)."""
    return hashlib.sha256(base64.b64decode(public_key_text(key))).hexdigest()[:16]


# --- signing and verifying ----------------------------------------------------------------


def sign_manifest(manifest: ModelManifest, key: Ed25519PrivateKey) -> SignedManifest:
    signature = key.sign(canonical_bytes(manifest))
    return SignedManifest(
        manifest=manifest,
        key_id=key_id(key),
        signature=base64.b64encode(signature).decode("ascii"),
    )


def encode_signed(signed: SignedManifest) -> bytes:
    return signed.model_dump_json(indent=2).encode("utf-8")


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "manifest"
    return f"{loc}: {str(err['msg']).removeprefix('Value error, ')}"


def parse_signed(data: bytes) -> SignedManifest:
    """A signed manifest from its JSON bytes; ArtefactError("malformed") for anything else."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ArtefactError("malformed", f"manifest of {len(data)} bytes is over the limit")
    try:
        return SignedManifest.model_validate_json(data)
    except ValidationError as exc:
        raise ArtefactError("malformed", _describe(exc)) from None


def verify_manifest(signed: SignedManifest, public_key: Ed25519PublicKey) -> ModelManifest:
    """The manifest when ``public_key`` signed it; ArtefactError otherwise."""
    if signed.key_id != key_id(public_key):
        raise ArtefactError(
            "wrong_key",
            f"signed by key {signed.key_id}, this device trusts key {key_id(public_key)}",
        )
    try:
        signature = base64.b64decode(signed.signature, validate=True)
        public_key.verify(signature, canonical_bytes(signed.manifest))
    except (binascii.Error, ValueError, InvalidSignature):
        raise ArtefactError("bad_signature", "the signature does not match the manifest") from None
    return signed.manifest


_VERSION = re.compile(
    r"([0-9]+)\.([0-9]+)\.([0-9]+)(?:-([A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*))?(?:\+[A-Za-z0-9.]+)?"
)
VersionKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def version_order(version: str) -> VersionKey:
    """A sort key that orders release versions by semantic-version precedence: major, minor,
    patch as numbers (2.10.0 after 2.4.0), a pre-release (``3.0.0-rc.1``) before its release,
    pre-release identifiers numeric before alphanumeric, build metadata (``+...``) ignored.
    ``ValueError`` for anything else."""
    found = _VERSION.fullmatch(version) if len(version) <= 64 else None
    if found is None:
        raise ValueError(f"not a release version: {version[:64]!r}")
    major, minor, patch, pre = found.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    ids = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), 0, ids)


def is_newer(candidate: str, than: str) -> bool:
    """True when release ``candidate`` takes precedence over ``than`` (a version equal in
    precedence, ``1.2.0+b2`` against ``1.2.0``, is not newer)."""
    return version_order(candidate) > version_order(than)


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify_artefact(
    manifest_bytes: bytes,
    directory: Path,
    *,
    public_key: Ed25519PublicKey,
    plate_format: int,
) -> ModelManifest:
    """Check a downloaded release before anything loads it; return its manifest.

    ``manifest_bytes`` is the signed manifest as downloaded, ``directory`` holds its files.
    The signature is checked before any file is hashed, and every file is hashed whole: a
    release is accepted all or nothing.
    """
    signed = parse_signed(manifest_bytes)
    manifest = verify_manifest(signed, public_key)
    if plate_format not in manifest.plate_formats:
        raise ArtefactError(
            "plate_format",
            f"{manifest.name} {manifest.version} reads {list(manifest.plate_formats)}-well "
            f"plates, this device reads {plate_format}-well plates",
        )
    for entry in manifest.files:
        path = directory / entry.path
        if not path.is_file():
            raise ArtefactError("missing_file", f"{entry.path} was not downloaded")
        sha, size = _sha256_file(path)
        if size < entry.size_bytes:
            raise ArtefactError(
                "truncated", f"{entry.path}: {size} of {entry.size_bytes} bytes (download cut)"
            )
        if size != entry.size_bytes or sha != entry.sha256:
            raise ArtefactError(
                "tampered", f"{entry.path}: sha256 or size differs from the manifest"
            )
    return manifest
