"""The ingest's hot queries on the session's own psycopg connection (same transaction).

SQLAlchemy's result rows and executemany cost more than the database's work for the
thousands of rows a batch reads and writes; these helpers go to the driver directly and turn
its errors into SQLAlchemy's, so the worker still tells an outage from a bad message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session


def driver_connection(session: Session) -> psycopg.Connection[Any]:
    conn = session.connection().connection.driver_connection
    assert conn is not None
    return conn  # type: ignore[no-any-return]


@contextlib.contextmanager
def as_sqlalchemy_errors() -> Iterator[None]:
    """Raw psycopg errors as SQLAlchemy's, so the worker tells outages from bad data.

    (A unique violation here is another worker having written the same run a moment ago.)
    """
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise sa_exc.IntegrityError("COPY", None, exc) from exc
    except psycopg.DataError as exc:
        raise sa_exc.DataError("COPY", None, exc) from exc
    except psycopg.OperationalError as exc:
        raise sa_exc.OperationalError("COPY", None, exc) from exc
    except psycopg.Error as exc:
        raise sa_exc.DBAPIError("COPY", None, exc) from exc
