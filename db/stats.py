"""Row counts per table, for `barcast db stats` and status views."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from db.engine import Database
from db.schema import metadata


def count_rows(conn: Connection) -> dict[str, int]:
    """Rows of every table the schema owns, parents before children (on `conn`: inside a
    snapshot, what that snapshot sees)."""
    return {str(t.name): int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables}


def table_counts(database: Database) -> dict[str, int]:
    with database.engine.connect() as conn:
        return dict(sorted(count_rows(conn).items()))


def database_size_bytes(database: Database) -> int | None:
    """On-disk size (SQLite file + WAL, or pg_database_size)."""
    if database.path is not None:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = database.path.with_name(database.path.name + suffix)
            if p.exists():
                total += p.stat().st_size
        return total
    if database.dialect == "postgresql":
        with database.engine.connect() as conn:
            return int(conn.execute(select(func.pg_database_size(func.current_database()))).scalar_one())
    return None
