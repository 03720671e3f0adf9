"""Shared fixtures: real data from ../shared, real SQLite files, a real PostgreSQL server."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError

from db.engine import Database, normalise_url, open_database

REPO = Path(__file__).resolve().parents[1]
PG_ENV = "BARCAST_TEST_PG_URL"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository (real captures and candles); its absence is a failure."""
    path = Path(os.environ.get("BARCAST_SHARED_DIR", REPO.parent / "shared"))
    assert (path / "data").is_dir() and (path / "captures").is_dir(), f"real data not found at {path}"
    return path


@pytest.fixture
def tmp_db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'barcast.db'}")
    yield database
    database.close()


@pytest.fixture(scope="session")
def pg_url() -> str:
    """Server URL of a real PostgreSQL (CI exports it; tests skip only where it is unset)."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (CI sets it and starts PostgreSQL)")
    return url


@pytest.fixture
def pg_db_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"barcast_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(pg_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalise_url(pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        drop_database(admin, name)
        admin.dispose()


def drop_database(admin: Engine, name: str) -> None:
    """DROP ... WITH (FORCE) ends our own sessions, but not an autovacuum worker that many deletes
    (retention) started on the database: that one is not ours to terminate, so wait it out."""
    for attempt in range(60):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except ProgrammingError:
            if attempt == 59:
                raise
            time.sleep(0.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test against both engines."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'barcast.db'}"
    else:
        yield request.getfixturevalue("pg_db_url")


@pytest.fixture
def any_db(any_db_url: str) -> Iterator[Database]:
    database = open_database(any_db_url)
    yield database
    database.close()
