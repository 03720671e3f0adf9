"""`barcast db upgrade|stats`."""

from __future__ import annotations

import click

from daemon.cli.common import AppContext, emit_rows, format_option, iso, pass_app
from db import migrate
from db.bars import series_stats
from db.engine import open_database
from db.stats import database_size_bytes, table_counts


@click.group("db")
def db_group() -> None:
    """Database schema and contents."""


@db_group.command("upgrade")
@pass_app
def upgrade_cmd(app: AppContext) -> None:
    """Create or upgrade the schema in place (run after installing a new barcast)."""
    database = open_database(app.config.database_url, upgrade=True)
    try:
        with database.engine.connect() as conn:
            rev = migrate.current_revision(conn)
    finally:
        database.close()
    click.echo(f"database {database.display_url} is at schema version {rev} (latest {migrate.head_revision()})")


@db_group.command("stats")
@format_option()
@pass_app
def stats_cmd(app: AppContext, fmt: str) -> None:
    """Rows per table and first/last bar per series."""
    database = app.database()
    counts = table_counts(database)
    series = series_stats(database)
    if fmt == "json":
        import sys

        import orjson

        doc = {
            "database": database.display_url,
            "size_bytes": database_size_bytes(database),
            "tables": counts,
            "series": [
                {"series": str(s.series), "bars": s.bars, "first": iso(s.first), "last": iso(s.last)} for s in series
            ],
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    emit_rows([{"table": k, "rows": v} for k, v in counts.items()], ["table", "rows"], fmt,
              title=f"{database.display_url}")
    emit_rows(
        [{"series": str(s.series), "bars": s.bars, "first": s.first, "last": s.last} for s in series],
        ["series", "bars", "first", "last"],
        fmt,
        title="bars per series",
    )


commands = [db_group]
