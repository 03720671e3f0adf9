"""`barcast db upgrade|stats|prune`."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson

from daemon.cli.common import AppContext, emit_rows, format_option, iso, pass_app
from db import migrate
from db.bars import series_stats
from db.engine import open_database
from db.errors import BarcastError, InputError
from db.stats import database_size_bytes, table_counts

F = TypeVar("F", bound=Callable[..., Any])


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
    change = database.schema_change
    if change is None:
        done = "already at the latest"
    elif change[0] is None:
        done = "created"
    else:
        done = f"upgraded from {change[0]}"
    click.echo(f"database {database.display_url} is at schema version {rev} ({done}; latest {migrate.head_revision()})")


@db_group.command("stats")
@format_option()
@pass_app
def stats_cmd(app: AppContext, fmt: str) -> None:
    """Rows per table and first/last bar per series."""
    database = app.database()
    counts = table_counts(database)
    series = series_stats(database)
    if fmt == "json":
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


#: What each table's rows are pruned by, for the table output.
_RULES = {
    "forecast_scores": "scores of the forecasts below",
    "forecasts": "issued > forecasts_days before the series' newest bar, no step waiting, not the newest",
    "calibration": "of a model not champion now, unchanged for models_days",
    "champion_history": "champion terms ended > models_days ago (never a series' open term)",
    "model_artifacts": "stored artifacts of the models below",
    "models": "retired, no champion term left, > models_days old, beyond the newest retrain.keep_artifacts",
    "training_jobs": "done or failed > jobs_days ago",
    "feed_gaps": "feed gaps detected > gaps_days ago",
}


def _days_option(name: str, key: str) -> Callable[[F], F]:
    return click.option(f"--{name}", key, type=click.FloatRange(min=0, max=36500), default=None, metavar="DAYS",
                        help=f"Instead of retention.{key} (0: keep all).")


@db_group.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@_days_option("forecasts-days", "forecasts_days")
@_days_option("jobs-days", "jobs_days")
@_days_option("models-days", "models_days")
@_days_option("gaps-days", "gaps_days")
@click.option("--batch-rows", type=click.IntRange(1, 1_000_000), default=None,
              help="Instead of retention.batch_rows: most rows one delete transaction removes.")
@click.option("--vacuum", "do_vacuum", is_flag=True,
              help="Then give the space back: SQLite VACUUM (rewrites the file, holds the write lock meanwhile; "
                   "deleting rows alone never shrinks it); PostgreSQL VACUUM (ANALYZE) of the pruned tables.")
@format_option(choices=("table", "json"))
@pass_app
def prune_cmd(app: AppContext, dry_run: bool, forecasts_days: float | None, jobs_days: float | None,
              models_days: float | None, gaps_days: float | None, batch_rows: int | None, do_vacuum: bool,
              fmt: str) -> None:
    """Delete old forecasts and scores, finished training jobs, stale calibration states, ended
    champion terms, unreferenced retired models and old feed gaps by the [retention] config (bars
    are never deleted)."""
    from daemon.live.pruner import policy_of
    from db import retention

    if dry_run and do_vacuum:
        raise InputError("--vacuum with --dry-run: a dry run deletes nothing, so there is nothing to give back")
    database = app.database()
    policy = policy_of(app.config, forecasts_days=forecasts_days, jobs_days=jobs_days, models_days=models_days,
                       gaps_days=gaps_days, batch_rows=batch_rows)
    if forecasts_days:
        intervals = [k.interval for k in retention.forecast_series(database)]
        least = app.config.min_forecasts_days(intervals)
        if forecasts_days < least:
            raise InputError(f"--forecasts-days {forecasts_days:g} is less than the {least:.2f} days of forecasts "
                             "the live service reads back for these series; use at least that, or 0 to keep all")
    before = database_size_bytes(database)
    owner = f"cli:{socket.gethostname()}:{os.getpid()}"
    done = retention.prune_with_lease(database, policy, owner, dry_run=dry_run)
    if isinstance(done, retention.Busy):
        raise BarcastError(f"another process is pruning {database.display_url}: {done.owner} holds the retention "
                           f"lease until {iso(done.until)}; try again later")
    if do_vacuum:
        retention.vacuum(database)
    after = database_size_bytes(database)
    doc = {
        "database": database.display_url,
        "dry_run": dry_run,
        "policy": {"forecasts_days": policy.forecasts_days, "jobs_days": policy.jobs_days,
                   "models_days": policy.models_days, "gaps_days": policy.gaps_days,
                   "keep_models": policy.keep_models,
                   "batch_rows": policy.batch_rows},
        "rows": done.rows,
        "total": done.total,
        "batches": done.batches,
        "seconds": round(done.seconds, 3),
        "vacuumed": do_vacuum,
        "size_bytes_before": before,
        "size_bytes_after": after,
    }
    if fmt == "json":
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    verb = "would delete" if dry_run else "deleted"
    emit_rows([{"table": t, verb: n, "rule": _RULES[t]} for t, n in done.rows.items()], ["table", verb, "rule"],
              "table", title=f"{database.display_url}: {'dry run, nothing deleted' if dry_run else 'pruned'}")
    click.echo(f"{verb} {done.total} rows in {done.seconds:.1f} s" + ("" if dry_run else f" ({done.batches} batches)"))
    if not policy.active:
        click.echo("every retention setting is 0: nothing is pruned")
    sizes = f"{_mb(before)} before, {_mb(after)} after"
    if do_vacuum:
        click.echo(f"database size: {sizes} (vacuumed)")
    elif database.dialect == "sqlite" and not dry_run and done.total:
        click.echo(f"database size: {sizes}; SQLite reuses the freed pages but the file does not shrink: "
                   "`barcast db prune --vacuum` gives the space back (stop the daemon first, or expect its "
                   "writes to wait while it runs)")
    else:
        click.echo(f"database size: {_mb(before)}")


def _mb(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 1e6:.1f} MB"


commands = [db_group]
