"""Password hashing, JWTs and opaque tokens.

Access tokens are short JWTs (typ=access). Refresh tokens are JWTs too (typ=refresh, own
audience) so that one presented as an access token fails on both the type and the audience;
their state (used, revoked, family) lives in Postgres. Device tokens and reset tokens are
random strings stored only as SHA-256 digests: they carry 256 bits of entropy, so a fast
digest is enough and keeps per-request device auth cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from cloud.settings import CloudSettings

ALGORITHM = "HS256"
ALLOWED_ALGORITHMS = [ALGORITHM]  # never "none", never the key type's siblings
DEVICE_TOKEN_PREFIX = "mpd_"  # noqa: S105 (a prefix, not a secret)
TokenKind = Literal["access", "refresh"]

_hasher = PasswordHash((Argon2Hasher(),))
# Verified when the account does not exist, so a miss costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("microplate-dummy-password-for-timing")


class TokenError(Exception):
    """A token failed a check; the message is for logs, clients only see a generic 401."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check a password; with no hash, burn the same time on a dummy and return False."""
    if password_hash is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False
    return _hasher.verify(password, password_hash)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    kind: TokenKind
    jti: str
    expires_at: datetime
    issued_at: int
    family: str | None = None


def _audience(settings: CloudSettings, kind: TokenKind) -> str:
    return settings.jwt_audience if kind == "access" else settings.jwt_audience + ":refresh"


def create_token(
    settings: CloudSettings,
    *,
    subject: str,
    kind: TokenKind,
    expires_at: datetime,
    jti: str | None = None,
    family: str | None = None,
) -> str:
    now = utcnow()
    claims: dict[str, Any] = {
        "sub": subject,
        "typ": kind,
        "iss": settings.jwt_issuer,
        "aud": _audience(settings, kind),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": jti or uuid.uuid4().hex,
    }
    if family is not None:
        claims["fam"] = family
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def create_access_token(settings: CloudSettings, *, subject: str) -> str:
    expires = utcnow() + timedelta(minutes=settings.access_token_minutes)
    return create_token(settings, subject=subject, kind="access", expires_at=expires)


def decode_token(settings: CloudSettings, token: str, *, kind: TokenKind) -> TokenClaims:
    """Verify signature, algorithm, issuer, audience, expiry and type; raise TokenError."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=ALLOWED_ALGORITHMS,
            audience=_audience(settings, kind),
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "aud", "iss", "jti", "typ"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"{type(exc).__name__}: {exc}") from exc
    if claims.get("typ") != kind:
        raise TokenError(f"expected a {kind} token, got {claims.get('typ')!r}")
    family = claims.get("fam")
    if kind == "refresh" and not isinstance(family, str):
        raise TokenError("refresh token without family")
    return TokenClaims(
        subject=str(claims["sub"]),
        kind=kind,
        jti=str(claims["jti"]),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=timezone.utc),
        issued_at=int(claims["iat"]),
        family=family if isinstance(family, str) else None,
    )


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def digest_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def digests_match(token: str, digest: str) -> bool:
    return hmac.compare_digest(digest_token(token), digest)


def new_device_token(device_id: uuid.UUID) -> str:
    """`mpd_<device uuid hex>_<secret>`: the id lets us find the row without scanning."""
    return f"{DEVICE_TOKEN_PREFIX}{device_id.hex}_{new_opaque_token()}"


def parse_device_token(token: str) -> uuid.UUID | None:
    if not token.startswith(DEVICE_TOKEN_PREFIX):
        return None
    head, sep, _secret = token[len(DEVICE_TOKEN_PREFIX) :].partition("_")
    if not sep or len(head) != 32:
        return None
    try:
        return uuid.UUID(hex=head)
    except ValueError:
        return None
