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


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
