"""edge.auth on its own: credentials, lockout, sessions, elevation, audit."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr

from edge.auth import (
    METRICS_TOKEN_NAME,
    OPERATOR_SECRET_NAME,
    SUPERVISOR_HASH_NAME,
    SUPERVISOR_PIN_NAME,
    AuthConfig,
    AuthConfigError,
    Authenticator,
    AuthError,
    FailureLimiter,
    constant_time_equal,
    load_credentials,
)

# Cheap argon2 parameters: verification reads them from the hash, so tests stay fast.
FAST = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
PIN = "4711"
PIN_HASH = FAST.hash(PIN)
SECRET = "kiosk-secret-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class AuditLog(list):  # type: ignore[type-arg]
    def __call__(self, actor: str, action: str, detail: dict) -> None:
        self.append((actor, action, detail))

    def actions(self) -> list[str]:
        return [a for _, a, _ in self]


def make_auth(clock: Clock, audit: AuditLog, **overrides: object) -> Authenticator:
    config = AuthConfig(
        production=True,
        operator_secret=SecretStr(SECRET),
        supervisor_pin_hash=SecretStr(PIN_HASH),
        metrics_token=SecretStr("metrics-token-value"),
        **overrides,  # type: ignore[arg-type]
    )
    return Authenticator(config, load_credentials(config), audit, clock=clock)


def test_constant_time_equal() -> None:
    assert constant_time_equal("abc", "abc")
    assert not constant_time_equal("abc", "abd")
    assert not constant_time_equal("abc", "abcd")


def test_limiter_locks_after_max_failures_and_doubles() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=3, window_s=60, lockout_s=10, lockout_max_s=25, clock=clock)
    assert lim.record_failure("a") == 0
    assert lim.record_failure("a") == 0
    assert lim.record_failure("a") == 10
    assert lim.locked_for("a") == pytest.approx(10)
    assert lim.locked_for("b") == 0  # other addresses are unaffected
    clock.now += 10.5
    assert lim.locked_for("a") == 0
    for _ in range(2):
        lim.record_failure("a")
    assert lim.record_failure("a") == 20  # second lockout doubles
    clock.now += 21
    for _ in range(2):
        lim.record_failure("a")
    assert lim.record_failure("a") == 25  # capped
    lim.record_success("a")
    assert lim.locked_for("a") == 0


def test_limiter_forgets_failures_outside_window() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=2, window_s=5, lockout_s=10, lockout_max_s=100, clock=clock)
    lim.record_failure("a")
    clock.now += 6
    assert lim.record_failure("a") == 0


def test_sign_in_session_expiry_and_sign_out() -> None:
    clock, audit = Clock(), AuditLog()
    auth = make_auth(clock, audit, session_ttl_s=100)
    token, session = auth.sign_in(SECRET, "10.0.0.5")
    assert auth.session_for(token) is session
    assert session.role == "operator"
    assert auth.session_for(token + "x") is None
    clock.now += 101
    assert auth.session_for(token) is None
    token, _ = auth.sign_in(SECRET, "10.0.0.5")
    auth.sign_out(token)
    assert auth.session_for(token) is None
    assert audit.actions() == ["auth.sign_in", "auth.sign_in", "auth.sign_out"]
    # The token never reaches the audit log.
    assert all(token not in repr(entry) for entry in audit)


def test_wrong_secret_counts_and_locks_out_even_the_right_secret() -> None:
    clock, audit = Clock(), AuditLog()
    auth = make_auth(clock, audit)
    for _ in range(4):
        with pytest.raises(AuthError) as err:
            auth.sign_in("wrong", "10.0.0.9")
        assert err.value.code == "invalid_credentials"
    with pytest.raises(AuthError) as err:
        auth.sign_in("wrong", "10.0.0.9")
    assert err.value.code == "locked_out"
    assert err.value.retry_after == 60
    with pytest.raises(AuthError) as err:
        auth.sign_in(SECRET, "10.0.0.9")  # right secret, still locked
    assert err.value.code == "locked_out"
    auth.sign_in(SECRET, "10.0.0.10")  # another address is fine
    clock.now += 61
    auth.sign_in(SECRET, "10.0.0.9")
    actions = audit.actions()
    assert actions.count("auth.sign_in.failed") == 5
    assert "auth.lockout" in actions
    assert "auth.sign_in.refused_locked" in actions


def test_elevation_window_and_wrong_pin() -> None:
    clock, audit = Clock(), AuditLog()
    auth = make_auth(clock, audit, elevation_ttl_s=30)
    _token, session = auth.sign_in(SECRET, "c")
    with pytest.raises(AuthError):
        auth.elevate(session, "0000", "c")
    assert session.role == "operator"
    auth.elevate(session, PIN, "c")
    assert session.role == "supervisor"
    clock.now += 31
    assert session.role == "operator"
    auth.elevate(session, PIN, "c")
    auth.drop_elevation(session)
    assert session.role == "operator"
    assert {"auth.elevate.failed", "auth.elevate"} <= set(audit.actions())


def test_metrics_token() -> None:
    auth = make_auth(Clock(), AuditLog())
    assert auth.is_metrics_token("metrics-token-value")
    assert not auth.is_metrics_token("metrics-token-valu")


def test_session_cap_evicts_oldest() -> None:
    auth = make_auth(Clock(), AuditLog(), max_sessions=2)
    first, _ = auth.sign_in(SECRET, "c")
    auth.sign_in(SECRET, "c")
    auth.sign_in(SECRET, "c")
    assert auth.session_for(first) is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"operator_secret": None}, "operator secret"),
        ({"supervisor_pin_hash": None}, "supervisor PIN hash"),
        ({"operator_secret": SecretStr("changeme")}, "default"),
        ({"operator_secret": SecretStr("short")}, "shorter"),
        ({"supervisor_pin_hash": SecretStr("4711")}, "not an argon2 hash"),
    ],
)
def test_production_refuses_missing_or_default_credentials(
    overrides: dict[str, object], fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    values: dict[str, object] = {
        "production": True,
        "operator_secret": SecretStr(SECRET),
        "supervisor_pin_hash": SecretStr(PIN_HASH),
        "credentials_dir": tmp_path,  # production never generates, even with a directory
        **overrides,
    }
    with pytest.raises(AuthConfigError, match=fragment):
        load_credentials(AuthConfig(**values))  # type: ignore[arg-type]
    assert not (tmp_path / OPERATOR_SECRET_NAME).exists()


def test_production_reads_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / OPERATOR_SECRET_NAME).write_text(SECRET + "\n")
    (tmp_path / SUPERVISOR_HASH_NAME).write_text(PIN_HASH + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    creds = load_credentials(AuthConfig(production=True))
    assert creds.operator_secret.get_secret_value() == SECRET
    assert creds.supervisor_pin_hash.get_secret_value() == PIN_HASH
    assert creds.metrics_token is None


def test_operator_secret_file_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "op"
    path.write_text(SECRET)
    config = AuthConfig(
        production=True, operator_secret_file=path, supervisor_pin_hash=SecretStr(PIN_HASH)
    )
    assert load_credentials(config).operator_secret.get_secret_value() == SECRET
    missing = AuthConfig(
        production=True,
        operator_secret_file=tmp_path / "nope",
        supervisor_pin_hash=SecretStr(PIN_HASH),
    )
    with pytest.raises(AuthConfigError, match="Cannot read"):
        load_credentials(missing)


def test_development_generates_private_credentials_and_logs_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    caplog.set_level(logging.DEBUG)
    directory = tmp_path / "credentials"
    creds = load_credentials(AuthConfig(production=False, credentials_dir=directory))
    assert creds.generated_in == directory
    names = (OPERATOR_SECRET_NAME, SUPERVISOR_HASH_NAME, SUPERVISOR_PIN_NAME, METRICS_TOKEN_NAME)
    for name in names:
        mode = stat.S_IMODE(os.stat(directory / name).st_mode)
        assert mode == 0o600, name
    pin = (directory / SUPERVISOR_PIN_NAME).read_text().strip()
    assert FAST.verify(pin, creds.supervisor_pin_hash.get_secret_value())
    secret = creds.operator_secret.get_secret_value()
    assert secret == (directory / OPERATOR_SECRET_NAME).read_text().strip()
    assert str(directory) in caplog.text
    assert secret not in caplog.text and pin not in caplog.text
    # A second start reuses them rather than locking the kiosk out.
    again = load_credentials(AuthConfig(production=False, credentials_dir=directory))
    assert again.operator_secret.get_secret_value() == secret


def test_hash_command_prints_a_verifiable_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.auth import cli as auth

    answers = iter(["9753", "9753"])
    monkeypatch.setattr(auth.getpass, "getpass", lambda _prompt: next(answers))
    assert auth.main(["hash"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("$argon2id$") and "9753" not in printed
    assert FAST.verify("9753", printed)
    answers = iter(["9753", "9754"])
    assert auth.main(["hash"]) == 2
    assert "differ" in capsys.readouterr().err


def test_wrong_pins_from_many_addresses_pause_every_elevation() -> None:
    """Per-address lockout alone let 50 addresses try 250 PINs in 2.4 s (issue 17)."""
    clock, audit = Clock(), AuditLog()
    auth = make_auth(clock, audit, max_failures=5, elevation_global_failures=20, lockout_s=60)
    sessions = [auth.sign_in(SECRET, f"10.0.0.{i}")[1] for i in range(50)]
    refused = 0
    for i, session in enumerate(sessions):
        for guess in range(4):  # under each address's own limit of 5
            with pytest.raises(AuthError) as info:
                auth.elevate(session, f"{i:02d}{guess:02d}", f"10.0.0.{i}")
            refused += info.value.code == "locked_out"
    assert refused >= 50 * 4 - 20
    assert "auth.elevate.paused" in audit.actions()
    # Paused for everyone, the right PIN included, until the pause ends.
    with pytest.raises(AuthError) as info:
        auth.elevate(sessions[0], PIN, "10.0.0.0")
    assert info.value.code == "locked_out"
    clock.now += 61
    assert auth.elevate(sessions[0], PIN, "10.0.0.0").role == "supervisor"
