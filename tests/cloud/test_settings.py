"""Settings: unknown keys rejected, secrets from files, no default secrets in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud.settings import DEV_JWT_SECRET, CloudSettings, SettingsError, load_settings

STRONG = "k" * 48


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MICROPLATE_CLOUD_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)


def test_unknown_environment_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("MICROPLATE_CLOUD_JWT_SECRT", "typo")
    with pytest.raises(SettingsError, match="JWT_SECRT"):
        load_settings()


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError):
        CloudSettings(no_such_setting=1)  # type: ignore[call-arg]


def test_production_refuses_default_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("MICROPLATE_CLOUD_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="jwt_secret"):
        load_settings()
    monkeypatch.setenv("MICROPLATE_CLOUD_JWT_SECRET", DEV_JWT_SECRET)
    with pytest.raises(ValidationError, match="jwt_secret"):
        load_settings()
    monkeypatch.setenv("MICROPLATE_CLOUD_JWT_SECRET", STRONG)
    with pytest.raises(ValidationError, match="s3_secret_key"):
        load_settings()
    monkeypatch.setenv("MICROPLATE_CLOUD_S3_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("MICROPLATE_CLOUD_FIRST_ADMIN_PASSWORD", "admin")
    with pytest.raises(ValidationError, match="first_admin_password"):
        load_settings()
    monkeypatch.delenv("MICROPLATE_CLOUD_FIRST_ADMIN_PASSWORD")
    assert load_settings().environment == "production"


def test_development_runs_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    assert load_settings().jwt_secret.get_secret_value() == DEV_JWT_SECRET


def test_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clean(monkeypatch)
    (tmp_path / "jwt_secret").write_text(STRONG)
    (tmp_path / "s3_secret_key").write_text("s" * 40)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("MICROPLATE_CLOUD_ENVIRONMENT", "production")
    settings = load_settings()
    assert settings.jwt_secret.get_secret_value() == STRONG
    assert STRONG not in repr(settings)


def test_access_tokens_cannot_outlive_15_minutes() -> None:
    with pytest.raises(ValidationError):
        CloudSettings(access_token_minutes=60)
