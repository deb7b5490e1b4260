"""Engine, sessions, migrations and the wait-for-database step."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
READ_APPLICATION_NAME = "microplate-api-read"


def make_engine(settings: CloudSettings) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        # Fail fast under overload: a quick 503 beats a request parked for 30 s.
        pool_timeout=5,
        # Error messages (logged) never carry the statement's values: hashes, tokens, names.
        hide_parameters=True,
    )


def make_read_engine(settings: CloudSettings) -> Engine:
    """The pool of the hot read routes (`cloud.crud.fastread.read`): autocommit, no pre-ping.

    A pre-ping is a round trip on every checkout; these routes instead retry once on a fresh
    connection when a pooled one turns out dead (their single statements are reads, so a
    retry is safe). No overflow: the worker-thread limit is the pool size, so a thread never
    waits for a connection here.
    """
    return create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=5,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        # Tells these connections apart in pg_stat_activity.
        connect_args={"application_name": READ_APPLICATION_NAME},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def database_missing(exc: DBAPIError) -> bool:
    """The server answered that the database does not exist (at connect there is no
    SQLSTATE, only the server's message)."""
    if getattr(exc.orig, "sqlstate", None) == "3D000":
        return True
    text_ = str(exc.orig)
    return "database" in text_ and "does not exist" in text_


def wait_for_database(engine: Engine, *, timeout: float) -> None:
    """Retry until Postgres answers; the API and the database may start together."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            # A database that does not exist will not appear by waiting for it.
            if time.monotonic() >= deadline or database_missing(exc):
                raise
            logger.info("database not ready yet (attempt %s), retrying", attempt)
            time.sleep(min(2.0, 0.2 * attempt))
