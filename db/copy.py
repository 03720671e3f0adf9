"""Copy every table of one barcast database into another, empty one (`barcast db copy`):
SQLite to PostgreSQL, back, or PostgreSQL to PostgreSQL.

The tables and their order come from `db.schema.metadata` (parents before children, so foreign
keys hold at every insert); nothing here names a table. Rows keep their primary keys (forecast
stream positions, champion terms, job and gap ids), so every reference stays right, and
PostgreSQL's sequences are moved past the copied ids. The source is read in one snapshot
(PostgreSQL REPEATABLE READ; SQLite's read transaction, fixed by its first read in WAL mode),
streamed in batches; the target is written in one transaction, so a copy that fails leaves it
without rows. Values keep their exact form: money as Decimal (decimal text on SQLite, NUMERIC on
PostgreSQL), JSON columns as their stored text (SQL NULL stays NULL, JSON null stays null).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Connection, LargeBinary, Table, Text, bindparam, cast, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from db.engine import Database, create_db_engine, normalise_url, open_database
from db.errors import BarcastError, DatabaseError, InputError
from db.schema import metadata
from db.stats import count_rows

#: Rows read and written per batch (bounded memory whatever the table's size).
BATCH_ROWS = 5000
#: Rows per batch of a table with a binary column (`model_artifacts`: a row is a whole model file).
BLOB_BATCH_ROWS = 8

#: Called after each batch: table name, rows of it copied so far.
OnRows = Callable[[str, int], None]


def tables() -> list[Table]:
    """Every table the schema owns, parents before children."""
    return list(metadata.sorted_tables)


@dataclass(frozen=True)
class Copied:
    rows: dict[str, int]  # per table, as read from the source's snapshot
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name one database (one SQLite file, or one server's database)."""
    ua, ub = normalise_url(a), normalise_url(b)
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        return bool(ua.database and ub.database) and Path(ua.database or "").resolve() == Path(
            ub.database or "").resolve()
    return all(getattr(ua, k) == getattr(ub, k) for k in ("host", "port", "database"))


def open_empty_target(url: str) -> Database:
    """Open (creating it if needed) the target of a copy with the current schema. Refused when
    any of its tables holds a row (named), before anything is written to it; an empty database
    gets the schema created, or upgraded when an older barcast made it."""
    shown = normalise_url(url).render_as_string(hide_password=True)
    try:
        engine = create_db_engine(url, create=True)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot open target database {shown}: {getattr(exc, 'orig', exc)}") from None
    try:
        with engine.connect() as conn:
            for name in sorted(inspect(conn).get_table_names()):
                if name == "alembic_version":
                    continue
                quoted = conn.dialect.identifier_preparer.quote(name)
                count = conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one()
                if count:
                    raise InputError(
                        f"target database {shown} is not empty: table {name} holds {count:,} rows; "
                        "copy into a new, empty database (or drop this one and create it again)")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot open target database {shown}: {getattr(exc, 'orig', exc)}") from None
    finally:
        engine.dispose()
    return open_database(url, create=True, upgrade=True)


@contextmanager
def snapshot(database: Database) -> Iterator[Connection]:
    """One read transaction that sees the database as it was at its first read."""
    with database.engine.connect() as conn:
        if database.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def _read(table: Table) -> Any:
    """Every column, JSON ones as their stored text; in primary key order."""
    cols = [cast(c, Text).label(c.name) if isinstance(c.type, JSON) else c for c in table.columns]
    return select(*cols).order_by(*table.primary_key.columns)


def _batch_rows(table: Table) -> int:
    return BLOB_BATCH_ROWS if any(isinstance(c.type, LargeBinary) for c in table.columns) else BATCH_ROWS


def _sqlite_insert(table: Table) -> Any:
    """An INSERT binding JSON columns as the text read (no second encoding), the rest by type."""
    return table.insert().values({c.name: bindparam(c.name, type_=Text() if isinstance(c.type, JSON) else c.type)
                                  for c in table.columns})


def _pg_copy(conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """PostgreSQL: COPY the batch in (as db.forecasts stores many forecasts); values are the
    Python ones read (Decimal, aware datetime, bytes), JSON the stored text."""
    raw = conn.connection.driver_connection
    assert raw is not None
    quote = conn.dialect.identifier_preparer.quote
    cols = ", ".join(quote(n) for n in names)
    with raw.cursor() as cur, cur.copy(f"COPY {quote(table.name)} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL: each id sequence continues after the largest copied id."""
    quote = conn.dialect.identifier_preparer.quote
    for table in tables():
        col = table.autoincrement_column
        if col is None:
            continue
        conn.execute(text(
            f"SELECT setval(pg_get_serial_sequence(:t, :c), COALESCE(MAX({quote(col.name)}), 0) + 1, false) "
            f"FROM {quote(table.name)}"), {"t": table.name, "c": col.name})


def copy_rows(source: Database, target: Database, *, on_start: Callable[[dict[str, int]], None] | None = None,
              on_rows: OnRows | None = None) -> Copied:
    """Copy every row of `source` into the empty `target` (see the module docstring)."""
    started = time.monotonic()
    with snapshot(source) as src:
        counts = count_rows(src)  # the snapshot's first read fixes it (SQLite)
        if on_start is not None:
            on_start(counts)
        with target.begin() as dst:
            for table in tables():
                try:
                    _copy_table(src, dst, table, on_rows)
                except BarcastError:
                    raise
                except Exception as exc:  # a driver's own error (COPY), a value the target refuses
                    raise DatabaseError(f"copying table {table.name} into {target.display_url} failed: "
                                        f"{getattr(exc, 'orig', None) or exc}") from exc
            if target.dialect == "postgresql":
                _reset_sequences(dst)
    return Copied(counts, time.monotonic() - started)


def _copy_table(src: Connection, dst: Connection, table: Table, on_rows: OnRows | None) -> None:
    names = [c.name for c in table.columns]
    insert = _sqlite_insert(table) if dst.dialect.name != "postgresql" else None
    done = 0
    result = src.execution_options(yield_per=_batch_rows(table)).execute(_read(table))
    for part in result.partitions():
        if insert is None:
            _pg_copy(dst, table, names, part)
        else:
            dst.execute(insert, [dict(zip(names, r, strict=True)) for r in part])
        done += len(part)
        if on_rows is not None:
            on_rows(table.name, done)
    if insert is None:
        # Statistics before a child table's rows come: without them PostgreSQL checked each
        # forecast_scores row's foreign key through the series index, reading every forecast of
        # the series (a 120-day series' scores: an hour and more instead of seconds).
        dst.execute(text(f"ANALYZE {dst.dialect.identifier_preparer.quote(table.name)}"))
