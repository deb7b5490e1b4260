"""Start-up failures a person can fix, as one sentence each (the CLI prints it and exits 2).

An unreachable or missing database and unreachable or refusing object storage are the usual
first-day problems; they used to end in a stack trace. The sentences name the host, port and
database or endpoint, never a password.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from cloud.db import database_missing
from cloud.settings import CloudSettings
from cloud.storage import StorageError

FIXABLE = (OperationalError, DBAPIError, ArgumentError, BotoCoreError, ClientError, StorageError)


def _where(settings: CloudSettings) -> tuple[str, str]:
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return "?", "?"
    return f"{url.host or 'localhost'}:{url.port or 5432}", url.database or "?"


def explain(exc: BaseException, settings: CloudSettings) -> str | None:
    """The sentence for a start-up failure, or None when it is not one we know."""
    where, name = _where(settings)
    if isinstance(exc, ArgumentError):
        return (
            "MICROPLATE_CLOUD_DATABASE_URL is not a database URL; use "
            "postgresql+psycopg://USER@HOST:5432/DATABASE."
        )
    if isinstance(exc, DBAPIError):
        if database_missing(exc):
            return (
                f"The database {name!r} does not exist on {where}: create it (createdb {name}) "
                "or point MICROPLATE_CLOUD_DATABASE_URL at an existing one."
            )
        if isinstance(exc, OperationalError):
            return (
                f"The database server at {where} cannot be reached (database {name!r}): start "
                "PostgreSQL or fix MICROPLATE_CLOUD_DATABASE_URL."
            )
        return None
    endpoint = settings.s3_endpoint_url or "the default AWS endpoint"
    if isinstance(exc, StorageError):
        return (
            f"Object storage is not set up: {exc}. Set MICROPLATE_CLOUD_S3_ACCESS_KEY and "
            "MICROPLATE_CLOUD_S3_SECRET_KEY (or leave all MICROPLATE_CLOUD_S3_* unset)."
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        return (
            f"Object storage at {endpoint} refused the request ({code}): check "
            "MICROPLATE_CLOUD_S3_ACCESS_KEY, MICROPLATE_CLOUD_S3_SECRET_KEY and "
            "MICROPLATE_CLOUD_S3_BUCKET."
        )
    if isinstance(exc, BotoCoreError):
        return (
            f"Object storage at {endpoint} cannot be reached ({type(exc).__name__}): start the "
            "S3 server (MinIO, SeaweedFS, ...) or fix MICROPLATE_CLOUD_S3_ENDPOINT_URL."
        )
    return None
