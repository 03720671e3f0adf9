"""The one place that picks the dialect-specific INSERT (both engines support ON CONFLICT)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from db.engine import Database


def insert_for(database: Database | Connection, table: Table) -> Any:
    """An INSERT supporting `on_conflict_do_update/nothing` for this database's dialect."""
    dialect = database.dialect if isinstance(database, Database) else database.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


#: Keys one statement names in an IN list: PostgreSQL takes at most 65,535 parameters a
#: statement and overflows its stack on ~8,000 row values `(a, b, c, d) IN (...)` (measured on
#: 15 with the default max_stack_depth); some SQLite builds allow only 32,766 variables.
IN_LIST_MAX = 1000


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
