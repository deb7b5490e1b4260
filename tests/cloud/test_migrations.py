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


def test_s002_turns_well_rows_into_one_document_per_run_and_back() -> None:
    """Deployments already hold runs: their wells are converted, in plate order, both ways."""
    with private_database() as url:
        migrate(url, "s001")
        libpq = url.replace("+psycopg", "")
        with psycopg.connect(libpq) as conn:
            # Plain SQL: today's models have columns (sites.disabled_at, e001) s001 lacks.
            site = conn.execute(
                "INSERT INTO sites (id, slug, name, csv_template, created_at) VALUES"
                " (gen_random_uuid(), 'site-0', 'site-0', 'labware', now()) RETURNING id"
            ).fetchone()[0]
            device = conn.execute(
                "INSERT INTO devices (id, site_id, slug, name, mqtt_username,"
                " mqtt_password_hash, api_token_digest, status, created_at) VALUES"
                " (gen_random_uuid(), %s, 'dev-0', 'dev-0', 'site-0.dev-0', 'x', %s, 'active',"
                " now()) RETURNING id",
                [site, "0" * 64],
            ).fetchone()[0]
            sample = conn.execute(
                "INSERT INTO samples (id, site_id, sample_number, n_runs, n_plates, rows_total,"
                " n_cols, distribution, summary, flags, updated_at) VALUES (gen_random_uuid(),"
                " %s, 'S-1', 1, 1, 8, 12, '{}', '{}', '{}', now()) RETURNING id",
                [site],
            ).fetchone()[0]
            run = conn.execute(
                "INSERT INTO runs (run_id, edit, site_id, device_id, sample_id, plate_id,"
                " sample_number, read_at, n_rows, n_cols, status, flags, extra, image_keys,"
                " received_at) VALUES (gen_random_uuid(), 0, %s, %s, %s, gen_random_uuid(),"
                " 'S-1', now(), 8, 12, 'current', '{}', '{}', '{}', now()) RETURNING run_id",
                [site, device, sample],
            ).fetchone()[0]
            # Inserted out of plate order on purpose; one well with a box and a flag.
            for r, c in [(1, 0), (0, 1), (0, 0)]:
                conn.execute(
                    "INSERT INTO run_wells (run_id, well_id, row, col, state, confidence,"
                    " class_name, box, flags, n_detections) VALUES (%s, %s, %s, %s, 'flowing',"
                    " 0.5, 'flowing', %s, %s, 1)",
                    [
                        run,
                        f"{'AB'[r]}{c + 1}",
                        r,
                        c,
                        [1.0, 2.5, 3.0, 4.0] if (r, c) == (0, 1) else None,
                        ["multiple"] if (r, c) == (0, 1) else [],
                    ],
                )
            conn.commit()
        migrate(url)
        with psycopg.connect(libpq) as conn:
            [(doc,)] = conn.execute("SELECT wells FROM run_wells").fetchall()
        assert [w["well_id"] for w in doc] == ["A1", "A2", "B1"]
        assert doc[1]["box"] == [1.0, 2.5, 3.0, 4.0] and doc[1]["flags"] == ["multiple"]
        assert doc[0]["box"] is None and doc[0]["confidence"] == 0.5
        downgrade(url, "s001")
        with psycopg.connect(libpq) as conn:
            back = conn.execute(
                "SELECT well_id, box, flags FROM run_wells ORDER BY row, col"
            ).fetchall()
        assert back == [
            ("A1", None, []),
            ("A2", [1.0, 2.5, 3.0, 4.0], ["multiple"]),
            ("B1", None, []),
        ]
