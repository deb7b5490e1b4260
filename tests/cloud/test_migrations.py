"""Migrations upgrade from empty, downgrade cleanly and match the models."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from cloud.db import downgrade, migrate
from cloud.models import Base
from tests.cloud.conftest import private_database

pytestmark = pytest.mark.postgres


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade() -> None:
    with private_database() as url:
        migrate(url)
        tables = _tables(url)
        assert {"users", "sites", "devices", "runs", "run_wells", "run_rows", "samples"} <= tables
        downgrade(url, "base")
        assert _tables(url) <= {"alembic_version"}
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            types = conn.execute(
                "SELECT typname FROM pg_type WHERE typname = 'user_role'"
            ).fetchall()
        assert types == [], "downgrade left the enum type behind"
        migrate(url)
        assert _tables(url) == tables


def test_models_match_the_migrations() -> None:
    with private_database() as url:
        migrate(url)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        finally:
            engine.dispose()
        assert diff == [], f"models and migrations differ: {diff}"
