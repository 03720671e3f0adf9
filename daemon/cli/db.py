"""`barcast db upgrade|stats|prune|copy|backup|restore`."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from daemon.cli.common import AppContext, OutputPath, emit_rows, format_option, iso, pass_app, progress_bar
from db import migrate
from db.bars import series_stats
from db.engine import open_database, sqlite_file
from db.errors import BarcastError, InputError
from db.stats import database_size_bytes, table_counts

if TYPE_CHECKING:
    from db.backup import Copied as Paged
    from db.backup import Sealed
    from db.cluster import Instance
    from db.copy import Copied
    from db.engine import Database
    from db.restore import Checked, Kept
    from trainer.artifact_store import Embedded, Rehomed, TakenOver

F = TypeVar("F", bound=Callable[..., Any])


@click.group("db")
def db_group() -> None:
    """Database schema and contents: upgrade the schema, row counts, prune by retention, copy to
    another database, back up and restore (SQLite)."""


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


#: What to do with a target a copy left behind part-way.
_DROP = ("drop it (PostgreSQL: DROP DATABASE, then CREATE DATABASE; SQLite: delete the file) and run "
         "`barcast db copy` again")


@db_group.command("copy")
@click.option("--to", "target_url", required=True, metavar="URL",
              help="The empty database to copy into (postgresql://USER@HOST/DB, sqlite:///PATH or a path).")
@click.option("--artifacts-dir", type=OutputPath(directory=True), default=None,
              help="A SQLite target's model files go to DIR/<model id> [paths.artifacts_dir].")
@format_option(choices=("table", "json"))
@pass_app
def copy_cmd(app: AppContext, target_url: str, artifacts_dir: Path | None, fmt: str) -> None:
    """Copy this database (--db / config) into an empty one: SQLite to PostgreSQL, back, or
    PostgreSQL to PostgreSQL, model artifacts included. Stop every daemon on it first. Prints the
    rows per table in both and exits 1 naming what does not match."""
    from db import copy, registry
    from trainer import artifact_store

    started = time.monotonic()
    source = app.database()  # an older schema is refused here: run `barcast db upgrade` first
    if copy.same_database(source.url, target_url):
        raise InputError(f"--to {target_url} is the source database itself")
    live = _live_daemons(source)
    if live:
        raise BarcastError(_running(source, live, "the copy would miss what it writes meanwhile"))
    missing = artifact_store.unavailable(source)
    if missing:
        raise BarcastError("models in use have no artifact to copy: " + "; ".join(
            f"{m}: {why}" for m, why in missing.items()) + " (restore it, or retire the model, then copy)")
    files_dir = artifacts_dir or app.config.artifacts_dir
    target = copy.open_empty_target(target_url)
    try:
        done = _copy_rows(app, source, target)
        counts = table_counts(target)
        problems = [f"table {t}: {n:,} rows in the source, {counts.get(t, 0):,} in the target"
                    for t, n in done.rows.items() if counts.get(t, 0) != n]
        try:
            moved = artifact_store.rehome(target, files_dir)
        except BarcastError as exc:
            raise BarcastError(f"{exc}; the target {target.display_url} holds the copied rows but not every "
                               f"model artifact: {_DROP}") from exc
        problems += [f"daemon {i.id} (host {i.host}, pid {i.pid}) started on the source during the copy: what it "
                     "wrote since is not in the target" for i in _live_daemons(source)]
        in_use = [m for m in registry.list_models(target) if m.status != "retired"]
        problems += [f"model {m}: {why}" for m, why in artifact_store.unloadable(target, in_use).items()]
        _report(fmt, source, target, done, counts, moved, files_dir, problems, started)
    finally:
        target.close()
    if problems:
        raise BarcastError(f"the copy does not match the source: {'; '.join(problems)}; {_DROP}")


def _live_daemons(database: Database) -> list[Instance]:
    """Daemons whose heartbeat has not expired (a clean stop removes the row at once)."""
    from db.cluster import live_instances

    return live_instances(database)


def _running(database: Database, live: list[Instance], why: str) -> str:
    """The refusal naming the daemons running on `database` and `why` that matters."""
    who = ", ".join(f"{i.id} (host {i.host}, pid {i.pid}, last heartbeat {iso(i.heartbeat_at)})" for i in live)
    return (f"a daemon is running on {database.display_url}: {who}; stop it first (`systemctl stop barcast`): "
            f"{why}. A daemon that died counts as running until its heartbeat expires "
            f"({iso(max(i.expires_at for i in live))})")


def _copy_rows(app: AppContext, source: Database, target: Database) -> Copied:
    """The rows, with a progress bar on a terminal; a failure leaves the target without rows."""
    from db import copy

    with progress_bar(app.console) as progress:
        task = progress.add_task("copying", total=None)
        seen: dict[str, int] = {}

        def started(counts: dict[str, int]) -> None:
            progress.update(task, total=sum(counts.values()))

        def rows(table: str, done: int) -> None:
            seen[table] = done
            progress.update(task, completed=sum(seen.values()), description=f"copying {table}")

        try:
            return copy.copy_rows(source, target, on_start=started, on_rows=rows)
        except BarcastError as exc:
            raise BarcastError(f"{exc}; nothing was kept in {target.display_url} (its rows go in one "
                               "transaction): fix the cause and run `barcast db copy` again") from exc


def _report(fmt: str, source: Database, target: Database, done: Copied, counts: dict[str, int], moved: Rehomed,
            files_dir: Path, problems: list[str], started: float) -> None:
    """Rows per table as copied (before the artifacts moved), the artifacts, what did not match."""
    rate = done.total / done.seconds if done.seconds > 0 else 0.0
    tables = [{"table": t, "source": n, "target": counts.get(t, 0)} for t, n in done.rows.items()]
    where = ("stored in the database" if moved.to_database else f"written to {files_dir}" if moved.to_files else
             "kept as they were (copied as model_artifacts rows, or the registry's directories)")
    doc = {
        "source": source.display_url,
        "target": target.display_url,
        "ok": not problems,
        "problems": problems,
        "rows": done.total,
        "seconds": round(done.seconds, 3),
        "rows_per_s": round(rate),
        "total_seconds": round(time.monotonic() - started, 3),
        "tables": tables,
        "artifacts": {"to_database": moved.to_database, "to_files": moved.to_files,
                      "directory": str(files_dir) if moved.to_files else None, "files": moved.files,
                      "pruned": moved.pruned},
    }
    if fmt == "json":
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    click.echo(f"source: {source.display_url}\ntarget: {target.display_url}")
    emit_rows(tables, ["table", "source", "target"], "table")
    click.echo(f"copied {done.total:,} rows in {done.seconds:.1f} s ({rate:,.0f} rows/s); "
               f"{doc['total_seconds']:.1f} s in all, artifacts and checks included")
    n = len(moved.to_database) + len(moved.to_files)
    click.echo(f"model artifacts: {n} models' files {where} ({moved.files} files)"
               + (f"; {len(moved.pruned)} retired models' artifacts were already pruned" if moved.pruned else "")
               + ("; the model_artifacts counts above are the rows as copied, before the files moved" if n else ""))
    if not problems:
        click.echo(f"next: point [database] url (or --db) at {target.display_url} and start barcast")


@db_group.command("backup")
@click.option("--to", "target", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="The backup file to write (its directory must exist).")
@click.option("--force", is_flag=True, help="Replace PATH if it exists (never the database itself).")
@format_option(choices=("table", "json"))
@pass_app
def backup_cmd(app: AppContext, target: Path, force: bool, fmt: str) -> None:
    """Copy the SQLite database (--db / config) into one consistent file while the daemon keeps
    running, with the files of its models inside it: put it back with `barcast db restore`.
    PostgreSQL: use pg_dump (the command is printed)."""
    from db import backup
    from db.engine import Database, create_db_engine

    started = time.monotonic()
    url = app.config.database_url
    source = sqlite_file(url)
    if source is None:
        raise InputError(_pg_dump_advice(url, target))
    if not source.is_file():
        create_db_engine(url, create=False).dispose()  # the usual message: a missing file, a directory
    backup.check_target(source, target, force=force)
    temp = backup.temp_path(target)
    try:
        with progress_bar(app.console) as progress:
            task = progress.add_task("copying pages", total=None)
            copied = backup.copy_pages(url, temp, lambda done, total: progress.update(task, completed=done,
                                                                                        total=total))
            progress.update(task, description="storing model files", completed=0, total=None)
            copy_db = Database(engine=create_db_engine(f"sqlite:///{temp}"), url=f"sqlite:///{temp}")
            try:
                embedded = _embed(copy_db)
            finally:
                copy_db.close()
            progress.update(task, description="PRAGMA integrity_check")
            sealed = backup.seal(temp)
        backup.place(temp, target)
    finally:
        backup.discard(temp)  # nothing left of a failed backup; after the rename there is no temp
    _backup_report(fmt, url, target, copied, sealed, embedded, time.monotonic() - started)


def _embed(copy_db: Database) -> Embedded | None:
    """The model files into the backup, when its schema has `model_artifacts` (from 0007 on)."""
    from sqlalchemy import inspect

    from trainer import artifact_store

    with copy_db.engine.connect() as conn:
        if "model_artifacts" not in inspect(conn).get_table_names():
            return None
    return artifact_store.embed(copy_db)


def _pg_url(url: str) -> tuple[str, str]:
    """The configured PostgreSQL URL for a libpq command line (shell-quoted, password left out),
    and the note on where the password comes from then ("" without one)."""
    import shlex

    from db.engine import normalise_url

    parsed = normalise_url(url)
    # URL.set(password=None) keeps the password: None there means "unchanged"
    plain = parsed._replace(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return shlex.quote(plain), " (the password from PGPASSWORD or ~/.pgpass)" if parsed.password else ""


def _pg_dump_advice(url: str, target: Path) -> str:
    """One line: the pg_dump command for the configured PostgreSQL database, password left out."""
    import shlex

    plain, password = _pg_url(url)
    return (f"barcast db backup copies SQLite databases; back up PostgreSQL with pg_dump (the model artifacts are "
            f"in the database, so it holds them too): pg_dump --format=custom --file={shlex.quote(str(target))} "
            f"{plain}{password}")


def _pg_restore_advice(url: str, source: Path) -> str:
    """One line: the pg_restore command that puts a `pg_dump --format=custom` file back into the
    configured PostgreSQL database in one transaction, password left out."""
    import shlex

    plain, password = _pg_url(url)
    return (f"barcast db restore restores SQLite databases; restore PostgreSQL with pg_restore (the model "
            f"artifacts are in the dump), after stopping every daemon on it: pg_restore --clean --if-exists "
            f"--no-owner --single-transaction --dbname={plain} {shlex.quote(str(source))}{password}")


def _backup_report(fmt: str, url: str, target: Path, copied: Paged, sealed: Sealed, embedded: Embedded | None,
                   seconds: float) -> None:
    from db.engine import normalise_url

    doc = {
        "source": normalise_url(url).render_as_string(hide_password=True),
        "target": str(target.absolute()),
        "bytes": sealed.bytes,
        "pages": sealed.pages,
        "page_size": sealed.page_size,
        "schema_version": copied.revision,
        "integrity_check": sealed.integrity,
        "copy_seconds": round(copied.seconds, 3),
        "seconds": round(seconds, 3),
        "artifacts": None if embedded is None else {
            "models": embedded.models, "files": embedded.files, "bytes": embedded.bytes,
            "missing": embedded.missing, "pruned": embedded.pruned},
    }
    missing = embedded.missing if embedded else {}
    for model_id, why in missing.items():
        click.echo(f"warning: model {model_id} is in use but its files are not in the backup ({why}); the "
                   "source cannot load it either", err=True)
    if fmt == "json":
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    click.echo(f"backup of {doc['source']} written to {doc['target']}")
    click.echo(f"{_mb(sealed.bytes)}, {sealed.pages:,} pages of {sealed.page_size:,} bytes, schema version "
               f"{copied.revision}, PRAGMA integrity_check {sealed.integrity}; pages copied in "
               f"{copied.seconds:.1f} s, {seconds:.1f} s in all")
    if embedded is None:
        click.echo(f"model artifacts: not included (schema {copied.revision} predates stored artifacts): "
                   "copy the model directories yourself")
    else:
        click.echo(f"model artifacts: {len(embedded.models)} models' files inside the backup ({embedded.files} "
                   f"files, {_mb(embedded.bytes)})"
                   + (f"; {len(embedded.pruned)} retired models' files were already pruned" if embedded.pruned
                      else ""))


@db_group.command("restore")
@click.option("--from", "source", required=True, type=click.Path(path_type=Path), metavar="BACKUP",
              help="The backup file (`barcast db backup` wrote it).")
@click.option("--force", is_flag=True,
              help="Replace the database if it exists (it is kept as <database>.before-restore-<UTC time>).")
@click.option("--artifacts-dir", type=OutputPath(directory=True), default=None, metavar="DIR",
              help="Where the daemon keeps model files [paths.artifacts_dir]: a model directory there that differs "
                   "from the backup's files is set aside.")
@format_option(choices=("table", "json"))
@pass_app
def restore_cmd(app: AppContext, source: Path, force: bool, artifacts_dir: Path | None, fmt: str) -> None:
    """Put a backup back as the SQLite database (--db / config): checked first (a barcast
    database this barcast knows, PRAGMA integrity_check), copied in beside it and renamed over it,
    a stale -wal never replayed into it. The database it replaces is kept as
    <database>.before-restore-<UTC time>. Stop the daemon first. PostgreSQL: use pg_restore (the
    command is printed)."""
    from db import backup, restore

    started = time.monotonic()
    url = app.config.database_url
    target = sqlite_file(url)
    if target is None:
        raise InputError(_pg_restore_advice(url, source))
    restore.check_paths(source, target)
    if target.exists() and not force:
        raise InputError(f"the database {target} exists; pass --force to replace it with {source.absolute()} "
                         f"(it is kept as {target.name}.before-restore-<UTC time>, beside it)")
    temp = backup.temp_path(target, "restore")
    try:
        with progress_bar(app.console) as progress:
            task = progress.add_task("copying the backup", total=None)
            restore.copy_backup(source, temp, lambda done, total: progress.update(task, completed=done, total=total))
            progress.update(task, description="PRAGMA integrity_check", completed=0, total=None)
            checked = restore.verify(temp, source)
        # only now is the database opened (a refused backup leaves it as it was, its -wal too)
        if target.exists():
            _refuse_live_target(url)
        suffix = restore.stamp()
        kept = restore.keep_current(target, suffix)
        removed = restore.place(temp, target)
    finally:
        backup.discard(temp)  # nothing left of a failed restore; after the rename there is no temp
    files_dir = artifacts_dir or app.config.artifacts_dir
    try:
        taken = _take_over(url, files_dir, suffix)
    except (BarcastError, OSError) as exc:
        raise BarcastError(f"{source} was restored into {target}" + (f" (the previous database is kept as {kept.path})"
                           if kept else "") + f", but checking its model files against {files_dir} failed: {exc}; "
                           "start barcast, and if a model does not load, see its error") from None
    _restore_report(fmt, url, source, target, checked, kept, removed, taken, files_dir, time.monotonic() - started)


def _refuse_live_target(url: str) -> None:
    """Refuse a database with a live daemon's heartbeat, as `barcast db copy` does (whatever its
    schema: the database is opened without a schema check). A file SQLite cannot read, or one
    without heartbeats (a schema before 0005), has none: `keep_current` still needs SQLite's
    exclusive lock, so a process holding it open stops the restore there."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import Database, create_db_engine

    database = Database(engine=create_db_engine(url, create=False), url=url)
    try:
        live = _live_daemons(database)
    except SQLAlchemyError:
        live = []
    finally:
        database.close()
    if live:
        raise InputError(_running(database, live, "restoring under it would leave it writing a file that is no "
                                                  "longer the database"))


def _take_over(url: str, files_dir: Path, suffix: str) -> TakenOver | None:
    """The restored database's model files against the artifacts directory (None: a schema before
    0007, which stores no model files)."""
    from sqlalchemy import inspect

    from db.engine import Database, create_db_engine
    from trainer import artifact_store

    database = Database(engine=create_db_engine(url, create=False), url=url)  # an older schema too
    try:
        with database.engine.connect() as conn:
            if "model_artifacts" not in inspect(conn).get_table_names():
                return None
        return artifact_store.take_over(database, files_dir, suffix)
    finally:
        database.close()


def _restore_report(fmt: str, url: str, source: Path, target: Path, checked: Checked, kept: Kept | None,
                    removed: list[Path], taken: TakenOver | None, files_dir: Path, seconds: float) -> None:
    from db.engine import normalise_url

    head = migrate.head_revision()
    upgrade = checked.schema_version != head
    doc = {
        "backup": str(source.absolute()),
        "database": normalise_url(url).render_as_string(hide_password=True),
        "bytes": checked.bytes,
        "pages": checked.pages,
        "page_size": checked.page_size,
        "schema_version": checked.schema_version,
        "latest_schema_version": head,
        "upgrade_needed": upgrade,
        "integrity_check": checked.integrity,
        "previous": None if kept is None else str(kept.path),
        "previous_side_files": [] if kept is None else [str(p) for p in kept.side_files],
        "removed": [str(p) for p in removed],
        "seconds": round(seconds, 3),
        "artifacts": None if taken is None else {
            "directory": str(files_dir), "models": taken.models, "set_aside": taken.set_aside,
            "unavailable": taken.unavailable},
    }
    for model_id, why in (taken.unavailable if taken else {}).items():
        click.echo(f"warning: model {model_id} is in use but cannot be loaded ({why})", err=True)
    if fmt == "json":
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    click.echo(f"restored {doc['backup']} into {target}")
    click.echo(f"{_mb(checked.bytes)}, {checked.pages:,} pages of {checked.page_size:,} bytes, schema version "
               f"{checked.schema_version}, PRAGMA integrity_check {checked.integrity}; {seconds:.1f} s")
    if kept is None:
        click.echo("previous database: none (there was no file at that path)")
    else:
        click.echo(f"previous database kept as {kept.path} (undo: `barcast db restore --force --from {kept.path}`; "
                   "delete it when no longer needed)")
        if not kept.folded:
            click.echo(f"warning: SQLite could not read the previous database; it was kept as it was, with "
                       f"{', '.join(map(str, kept.side_files)) or 'no side files'} beside it", err=True)
    if removed:
        click.echo(f"removed stale {', '.join(str(p) for p in removed)} (SQLite would have replayed them into "
                   "the restored file)")
    if taken is None:
        click.echo(f"model artifacts: none inside (schema {checked.schema_version} predates stored model files): "
                   "copy the model directories the registry names yourself")
    else:
        click.echo(f"model artifacts: {len(taken.models)} models' files inside; loaded into {files_dir} on first "
                   "use")
        for model_id, aside in taken.set_aside.items():
            click.echo(f"model {model_id}: {files_dir / model_id} held other files than the backup's; moved to "
                       f"{aside} (the backup's are loaded instead)")
    if upgrade:
        click.echo(f"schema version {checked.schema_version} is older than this barcast's {head}: `barcast run` "
                   "and every command refuse it until you run `barcast db upgrade`")
    else:
        click.echo("next: start barcast (`systemctl start barcast`)")


def _mb(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 1e6:.1f} MB"


commands = [db_group]
