"""Open a database from a URL: SQLite (embedded default) or PostgreSQL (scale-out).

Checks happen here, at start, so a bad path fails with a clear message instead of a crash
later: a file that is not SQLite is refused and left untouched, a read-only directory is
reported, and the schema version is checked (see `db.migrate`). A process holds one engine per
SQLite file and never opens the file except through SQLite (see `_Shared`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.pool import NullPool

from db.errors import DatabaseError, InputError, MissingDatabaseError

SQLITE_BUSY_TIMEOUT_MS = 15_000


@dataclass
class Database:
    """An open database: the SQLAlchemy engine plus what callers need to know about it."""

    engine: Engine
    url: str
    _closed: bool = field(default=False, repr=False, compare=False)
    #: What opening did to the schema: (version before, version after) when it created or
    #: upgraded it (`barcast db upgrade` says which), else None.
    schema_change: tuple[str | None, str] | None = field(default=None, repr=False, compare=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for a server database."""
        db = self.engine.url.database
        return Path(db) if self.dialect == "sqlite" and db and db != ":memory:" else None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction; translates driver errors into a DatabaseError naming the database."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(barcast_write=True)
                with conn.begin():
                    yield conn
        except SADatabaseError as exc:
            raise DatabaseError(f"database {self.display_url}: {exc.orig}") from exc

    @property
    def display_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release this handle; the shared engine of a SQLite file closes with its last user."""
        if not self._closed:
            self._closed = True
            _SHARED.release(self.engine)


#: The drivers barcast is written for (`postgresql://` means psycopg 3: COPY, LISTEN/NOTIFY).
DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")


def normalise_url(url: str) -> URL:
    """Parse a database URL; plain `postgresql://` uses psycopg 3, a bare path means SQLite."""
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise InputError(f"bad database URL {url!r}: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InputError(
            f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    if parsed.drivername not in DRIVERS:  # e.g. postgresql+psycopg2:// (other tools' habit): a traceback
        raise InputError(
            f"unsupported driver {parsed.get_driver_name()!r} in database URL "
            f"{parsed.render_as_string(hide_password=True)!r}: barcast speaks SQLite through the "
            f"standard library and PostgreSQL through psycopg 3; use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    return parsed


def _check_sqlite_path(path: Path, create: bool) -> None:
    """Checks that need no descriptor on the file: a plain open() and close() of it would drop
    every SQLite lock this process holds on the database (POSIX locks are per process), and a
    reader elsewhere could then delete the WAL of a connection still writing it."""
    if path.exists():
        if path.is_dir():
            raise DatabaseError(f"SQLite path {path} is a directory, not a database file")
    elif not create:
        raise MissingDatabaseError(
            f"SQLite database {path} does not exist (create it with `barcast db upgrade`, or check --db)")
    directory = path.parent
    if not directory.exists():
        if not create:
            raise MissingDatabaseError(f"directory {directory} of the SQLite database does not exist")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create database directory {directory}: {exc.strerror}") from None
    # SQLite in WAL mode writes -wal and -shm files beside the database: the directory itself
    # must be writable, not only the file. Probe it for real (os.access lies for root).
    probe = directory / f".barcast-probe-{uuid.uuid4().hex}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DatabaseError(
            f"database directory {directory} is not writable ({exc.strerror}); "
            "barcast needs to write the database and its WAL files there"
        ) from None


def _check_sqlite_header(engine: Engine, path: Path) -> None:
    """The header check, done by SQLite itself on a pooled connection (SQLITE_NOTADB): a file
    that is not a database is refused before anything is written to it."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA schema_version").scalar()
    except SADatabaseError as exc:
        if "not a database" in str(exc.orig):
            raise DatabaseError(
                f"{path} is not a SQLite database (bad file header); the file was left untouched"
            ) from None
        raise


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is disabled so SQLAlchemy's BEGIN is the real one.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writes (Database.begin) take the write lock up front with IMMEDIATE, so two writers queue on
    # busy_timeout instead of failing with "database is locked" when a read transaction tries to
    # upgrade. Reads stay deferred: in WAL mode they never wait for a writer.
    if conn.get_execution_options().get("barcast_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class _Shared:
    """One engine per SQLite file per process, counted: SQLite's locks are per process, so two
    engines on one file (or a stray descriptor) can release each other's locks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engines: dict[str, tuple[Engine, int]] = {}

    def acquire(self, key: str, make: Callable[[], Engine]) -> Engine:
        with self.lock:
            engine, users = self.engines.get(key) or (None, 0)
            if engine is None:
                engine = make()
            self.engines[key] = (engine, users + 1)
            return engine

    def release(self, engine: Engine) -> None:
        with self.lock:
            for key, (shared, users) in list(self.engines.items()):
                if shared is engine:
                    if users > 1:
                        self.engines[key] = (shared, users - 1)
                        return
                    del self.engines[key]
                    break
        engine.dispose()


_SHARED = _Shared()


def sqlite_file(url: str) -> Path | None:
    """The SQLite file a database URL names, as barcast opens it; None for a server database."""
    parsed = normalise_url(url)
    return _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None


def _sqlite_file(parsed: URL) -> Path | None:
    db = parsed.database
    return Path(db).resolve() if db and db != ":memory:" else None


def _new_sqlite_engine(parsed: URL) -> Engine:
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def create_db_engine(url: str, *, create: bool = True) -> Engine:
    """A new engine (migration tests, tools). Inside barcast use `open_database`, which shares
    one engine per SQLite file."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = _sqlite_file(parsed)
        if file is not None:
            _check_sqlite_path(file, create)
        return _new_sqlite_engine(parsed)
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5,
                         connect_args=pg_connect_args(parsed))


#: libpq settings barcast applies unless the URL sets them (`?connect_timeout=30`). Without them a
#: lost network or host (not a refused connection) hangs a connect for minutes and a query on an
#: open connection for ~15 min (TCP retransmission): no write failed, so none was logged or
#: retried, `/health` and `barcast status` hung instead of saying the database was unreachable,
#: and a daemon kept waiting on dead sockets after the database was back elsewhere.
PG_CONNECT_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "10",
                       "keepalives_interval": "5", "keepalives_count": "3", "tcp_user_timeout": "30000"}


def pg_connect_args(url: URL) -> dict[str, str]:
    """The `PG_CONNECT_DEFAULTS` the URL does not set itself, for every PostgreSQL connection."""
    return {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in url.query}


def _shared_engine(url: str, create: bool) -> Engine:
    parsed = normalise_url(url)
    file = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if file is None:
        return create_db_engine(url, create=create)
    _check_sqlite_path(file, create)
    engine = _SHARED.acquire(str(file), lambda: _new_sqlite_engine(parsed.set(database=str(file))))
    try:
        _check_sqlite_header(engine, file)
    except BaseException:
        _SHARED.release(engine)
        raise
    return engine


def open_database(url: str, *, create: bool = True, upgrade: bool = False) -> Database:
    """Open and check a database.

    An empty database gets the current schema when `create` is true. An older schema is
    upgraded only when `upgrade` is true (`barcast db upgrade`); otherwise it is refused
    with a message saying so. A schema newer than this barcast is always refused.
    """
    from db import migrate  # local: migrate imports this module

    try:
        engine = _shared_engine(url, create)
    except (OperationalError, SADatabaseError, sqlite3.DatabaseError) as exc:
        orig = getattr(exc, "orig", exc)
        shown = normalise_url(url).render_as_string(hide_password=True)
        raise DatabaseError(f"cannot open database {shown}: {orig}") from None
    database = Database(engine=engine, url=url)
    try:
        done = migrate.ensure_schema(database, create=create, allow_upgrade=upgrade)
        database.schema_change = None if done is None else (done.before, done.after)
    except (OperationalError, SADatabaseError, sqlite3.DatabaseError) as exc:
        database.close()
        orig = getattr(exc, "orig", exc)
        if database.dialect == "postgresql" and _pg_database_missing(database.engine.url):
            raise MissingDatabaseError(
                f"database {database.display_url} does not exist on its server; create it (`createdb`) or fix "
                "--db / [database] url") from None
        raise DatabaseError(f"cannot open database {database.display_url}: {orig}") from None
    except BaseException:
        database.close()
        raise
    return database


def _pg_database_missing(url: URL) -> bool:
    """Whether the server says `url`'s database does not exist (asked through its `postgres`
    database: a failed connect says so only in the server's own words and language, with no
    error code). False when that cannot be asked either (the server itself is unreachable)."""
    probe = create_engine(url.set(database="postgres"), poolclass=NullPool,
                          connect_args={**pg_connect_args(url), "connect_timeout": "3"})
    try:
        with probe.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}).first()
        return found is None
    except SADatabaseError:
        return False
    finally:
        probe.dispose()


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'barcast.db'}"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
