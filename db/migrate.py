"""Schema versions through Alembic, run in-process on our own connection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from db.engine import Database
from db.errors import DatabaseError, SchemaVersionError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Serialises concurrent `upgrade`s from several daemons sharing one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x6261_7263  # "barc"


def _alembic_config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return head


def known_revisions() -> list[str]:
    """Revisions this barcast knows, oldest first."""
    return [rev.revision for rev in reversed(list(_script().walk_revisions()))]


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})


def upgrade(database: Database, target: str = "head") -> UpgradeResult:
    """Upgrade the schema in place (idempotent). Refuses a database newer than this barcast."""
    with database.engine.begin() as conn:
        _lock(conn)
        before = current_revision(conn)
        _refuse_unknown(before, database)
        if before is None:
            _refuse_foreign_tables(conn, database)
        command.upgrade(_alembic_config(conn), target)
        after = current_revision(conn)
    assert after is not None
    return UpgradeResult(before, after)


def _refuse_unknown(rev: str | None, database: Database) -> None:
    if rev is not None and rev not in known_revisions():
        raise SchemaVersionError(
            f"database {database.display_url} has schema version {rev}, which is newer than this "
            f"barcast knows (up to {head_revision()}); upgrade barcast, or point it at another database"
        )


def _refuse_foreign_tables(conn: Connection, database: Database) -> None:
    tables = set(inspect(conn).get_table_names())
    ours = {"bars", "models", "forecasts"}
    if tables & ours:
        raise DatabaseError(
            f"database {database.display_url} has tables {sorted(tables & ours)} but no barcast "
            "schema version; refusing to touch it"
        )


def ensure_schema(database: Database, *, create: bool, allow_upgrade: bool) -> UpgradeResult | None:
    """Make sure the schema is current: create it if empty, upgrade if asked, else explain.
    Returns what it created or upgraded (None: already current)."""
    with database.engine.connect() as conn:
        rev = current_revision(conn)
    _refuse_unknown(rev, database)
    head = head_revision()
    if rev == head:
        return None
    if (rev is None and create) or allow_upgrade:
        return upgrade(database)
    if rev is None:
        raise DatabaseError(f"database {database.display_url} has no barcast schema")
    raise SchemaVersionError(
        f"database {database.display_url} has schema version {rev}, older than this barcast's "
        f"{head}; run `barcast db upgrade` (back it up first: `barcast db backup --to PATH`, pg_dump on PostgreSQL)"
    )
