"""Retention: delete old forecasts (with their scores), finished training jobs, stale
calibration states, ended champion terms, retired models nobody refers to and old feed gaps, in
bounded batches.

Bars are never deleted here: they are the training history. What the live service still needs
is never deleted either:

- forecasts count back from their series' newest stored bar (exchange time, so a replay of old
  data or a daemon that was down a while keeps what it has); a forecast goes as a whole set (all
  its steps and scores) and only when none of its steps still waits for its bar: every step is
  scored, or its target bar is absent and also older than the cut-off; the newest forecast of
  each series (`forecasts --latest`, the window restore's frontier) always stays;
- calibration states go only for a (series, model) that is not that series' champion now;
- a champion term (`champion_history`) goes only once ended `models_days` ago: the open term of
  each series (its champion) always stays, and the audit keeps who served when over the
  horizon the forecasts, scores and models are kept for;
- a model row goes only when retired, with no champion term left (after the old ones went), not
  among the newest `keep_models` of any of its series (the rollback candidates
  `retrain.keep_artifacts` keeps), with no forecast and no calibration state left; its artifact
  rows (`model_artifacts`) go with it;
- only finished (done or failed) training jobs go; queued and running ones are the queue;
- feed gaps (`feed_gaps`, the outage record) go `gaps_days` after they were detected, filled or
  not (the bars they concern are never deleted; no one retries a gap row: the ingest keeps the
  gaps it still fills in memory).

Each batch is one short transaction (SQLite's write lock is held for one batch only; a
PostgreSQL transaction stays small), so a first prune of a year of data does not stall the live
writer. Deleting twice deletes nothing more: the prune is idempotent, and harmless when two
processes run it at once; `prune_with_lease` still lets only one process prune at a time.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, delete, exists, func, literal, or_, select, tuple_

from db import leases
from db.dialect import IN_LIST_MAX, chunks
from db.engine import Database
from db.errors import DatabaseError
from db.records import SeriesKey
from db.registry import lock_champions
from db.schema import bars as bars_t
from db.schema import calibration as cal_t
from db.schema import champion_history as champ_t
from db.schema import feed_gaps as gaps_t
from db.schema import forecast_scores as sc_t
from db.schema import forecast_seq as seq_t
from db.schema import forecasts as fc_t
from db.schema import model_artifacts as art_t
from db.schema import models as models_t
from db.schema import series_is
from db.schema import training_jobs as jobs_t

log = logging.getLogger("barcast.retention")

#: The tables a prune reports, in the order it prunes them.
TABLES: tuple[str, ...] = ("forecast_scores", "forecasts", "calibration", "champion_history", "model_artifacts",
                           "models", "training_jobs", "feed_gaps")
#: The tables a prune deletes from: those it reports, and the stream positions that go with
#: the forecasts (counted with them).
PRUNED_TABLES: tuple[str, ...] = (*TABLES, "forecast_seq")
#: The lease that lets one process at a time prune a database (db/leases.py).
LEASE = "retention"


@dataclass(frozen=True, slots=True)
class Policy:
    """What to prune; a number of days of 0 keeps that kind of row for good."""

    forecasts_days: float = 90.0
    jobs_days: float = 30.0
    models_days: float = 90.0
    #: Feed gaps, by detection time. 0 here (keep) unlike the config's default of 90, so that a
    #: policy naming only the other kinds (0 each) prunes nothing.
    gaps_days: float = 0.0
    #: The newest models of each series are kept whatever their age (`retrain.keep_artifacts`).
    keep_models: int = 5
    #: Most forecast step rows (or other rows) one delete transaction removes.
    batch_rows: int = 5000
    #: Steps per forecast (`data.horizon`): how many forecast sets make a batch.
    horizon: int = 16

    @property
    def active(self) -> bool:
        return bool(self.forecasts_days or self.jobs_days or self.models_days or self.gaps_days)


@dataclass
class PruneResult:
    """Rows deleted (or, dry run, that would be) per table."""

    dry_run: bool
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    batches: int = 0
    seconds: float = 0.0
    #: False when the prune stopped early (its lease was lost, the daemon stops); what it deleted is
    #: counted, and the next prune finishes the rest.
    complete: bool = True
    #: Dry run: forecast sets counted as going per (series, model), for the models' count.
    pending: dict[tuple[SeriesKey, str], int] = field(default_factory=dict, repr=False)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _days(days: float) -> timedelta:
    return timedelta(seconds=days * 86400)


# --- forecasts ---------------------------------------------------------------------------------


def forecast_series(database: Database) -> list[SeriesKey]:
    """Every series with stored forecasts: one index seek per series (no scan of the table)."""
    out: list[SeriesKey] = []
    cols = (fc_t.c.exchange, fc_t.c.symbol, fc_t.c.interval)
    with database.engine.connect() as conn:
        while True:
            stmt = select(*cols).order_by(*cols).limit(1)
            if out:
                last = out[-1]
                stmt = stmt.where(tuple_(*cols) > tuple_(literal(last.exchange), literal(last.symbol),
                                                         literal(last.interval)))
            row = conn.execute(stmt).first()
            if row is None:
                return out
            out.append(SeriesKey(row[0], row[1], row[2]))


def _bounds(conn: Connection, key: SeriesKey, days: float) -> tuple[datetime, datetime] | None:
    """(cut-off, newest issue) of a series: forecasts issued before the cut-off (its newest bar
    minus `days`) may go, the newest issue never; None when it has no bar or no forecast."""
    newest_bar = conn.execute(select(func.max(bars_t.c.open_time, type_=bars_t.c.open_time.type))
                              .where(series_is(bars_t, key))).scalar_one()
    newest_issue = conn.execute(select(func.max(fc_t.c.issued_at, type_=fc_t.c.issued_at.type))
                                .where(series_is(fc_t, key))).scalar_one()
    if newest_bar is None or newest_issue is None:
        return None
    return newest_bar - _days(days), newest_issue


def _candidates(conn: Connection, key: SeriesKey, cutoff: datetime, newest_issue: datetime,
                after: tuple[datetime, str] | None, limit: int) -> list[tuple[datetime, str]]:
    """The oldest forecast sets of `key` issued before the cut-off (and before its newest issue),
    after the set `after`: one range of the primary key."""
    f = fc_t
    stmt = (select(f.c.issued_at, f.c.model_id)
            .where(series_is(f, key), f.c.step == 1, f.c.issued_at < cutoff, f.c.issued_at < newest_issue)
            .order_by(f.c.issued_at, f.c.model_id).limit(limit))
    if after is not None:
        stmt = stmt.where(or_(f.c.issued_at > after[0], and_(f.c.issued_at == after[0], f.c.model_id > after[1])))
    return [(r[0], r[1]) for r in conn.execute(stmt)]


@dataclass
class _Sets:
    """Forecast sets that may go, and their step and score rows."""

    keys: list[tuple[datetime, str]]
    steps: int
    scores: int


def _expired(conn: Connection, key: SeriesKey, cutoff: datetime, sets: list[tuple[datetime, str]]) -> _Sets:
    """Those of `sets` none of whose steps still waits: a step waits while it is unscored and its
    target bar may still come (at or after the cut-off) or is stored (the scorer may still score
    it: deleting the forecast under it would fail its score's foreign key). Three reads of
    primary-key ranges, decided here, so no query plan (a fresh table without statistics) can
    turn it into a nested scan."""
    first, last = sets[0][0], sets[-1][0]
    wanted = set(sets)
    f, s, b = fc_t, sc_t, bars_t
    steps = [r for r in conn.execute(select(f.c.issued_at, f.c.model_id, f.c.step, f.c.target_time).where(
        series_is(f, key), f.c.issued_at >= first, f.c.issued_at <= last)) if (r[0], r[1]) in wanted]
    scored = {(r[0], r[1], r[2]) for r in conn.execute(select(s.c.issued_at, s.c.model_id, s.c.step).where(
        series_is(s, key), s.c.issued_at >= first, s.c.issued_at <= last)) if (r[0], r[1]) in wanted}
    unscored = [r for r in steps if (r[0], r[1], r[2]) not in scored]
    stored: set[datetime] = set()
    if unscored:
        old = [r[3] for r in unscored if r[3] < cutoff]
        if old:
            stored = set(conn.execute(select(b.c.open_time).where(
                series_is(b, key), b.c.open_time >= min(old), b.c.open_time <= max(old))).scalars())
    waiting = {(r[0], r[1]) for r in unscored if r[3] >= cutoff or r[3] in stored}
    keys = [k for k in sets if k not in waiting]
    return _Sets(keys, sum(1 for r in steps if (r[0], r[1]) not in waiting),
                 sum(1 for r in scored if (r[0], r[1]) not in waiting))


def _delete_sets(conn: Connection, key: SeriesKey, sets: list[tuple[datetime, str]], result: PruneResult) -> None:
    """Delete the scores, step rows and stream positions (`forecast_seq`, one per set, counted
    with the forecasts they number) of these forecast sets of `key`."""
    for table, name in ((sc_t, "forecast_scores"), (fc_t, "forecasts"), (seq_t, None)):
        for part in chunks(sets, IN_LIST_MAX):
            n = conn.execute(delete(table).where(
                series_is(table, key), table.c.issued_at >= part[0][0], table.c.issued_at <= part[-1][0],
                tuple_(table.c.issued_at, table.c.model_id).in_(part))).rowcount
            if name is not None:
                result.rows[name] += n


def _prune_forecasts(database: Database, policy: Policy, result: PruneResult, go_on: Callable[[], bool]) -> None:
    """Series by series, batch by batch: each batch takes the next oldest sets issued before the
    cut-off, keeps those with a step still waiting, and deletes the rest in one transaction (a
    dry run goes through the same batches and counts)."""
    sets_per_batch = max(1, policy.batch_rows // max(1, policy.horizon))
    for key in forecast_series(database):
        after: tuple[datetime, str] | None = None
        while go_on():
            with database.engine.connect() if result.dry_run else database.begin() as conn:
                bounds = _bounds(conn, key, policy.forecasts_days)
                if bounds is None:
                    break
                cutoff, newest = bounds
                sets = _candidates(conn, key, cutoff, newest, after, sets_per_batch)
                if not sets:
                    break
                after = sets[-1]
                expired = _expired(conn, key, cutoff, sets)
                if not expired.keys:
                    continue
                if result.dry_run:
                    result.rows["forecasts"] += expired.steps
                    result.rows["forecast_scores"] += expired.scores
                    for _, model_id in expired.keys:
                        result.pending[(key, model_id)] = result.pending.get((key, model_id), 0) + 1
                else:
                    _delete_sets(conn, key, expired.keys, result)
            if not result.dry_run:
                result.batches += 1


# --- calibration, models, jobs -----------------------------------------------------------------


def _is_stale(c: Any, cutoff: datetime) -> Any:
    """A calibration state (of table or alias `c`) unchanged since `cutoff`, of a (series, model)
    not champion now."""
    champion_now = exists().where(
        champ_t.c.exchange == c.c.exchange, champ_t.c.symbol == c.c.symbol, champ_t.c.interval == c.c.interval,
        champ_t.c.model_id == c.c.model_id, champ_t.c.ended_at.is_(None))
    return and_(c.c.updated_at < cutoff, ~champion_now)


def _stale_calibration(cutoff: datetime) -> Select[Any]:
    c = cal_t
    return (select(c.c.exchange, c.c.symbol, c.c.interval, c.c.model_id).where(_is_stale(c, cutoff))
            .order_by(c.c.updated_at, c.c.exchange, c.c.symbol, c.c.interval, c.c.model_id))


def _batches(database: Database, result: PruneResult, select_keys: Select[Any], size: int,
             delete_keys: Callable[[Connection, list[tuple[Any, ...]]], None], go_on: Callable[[], bool]) -> None:
    """Select up to `size` keys and delete them, one transaction a batch (the keys named
    `IN_LIST_MAX` at a time), until none is left."""
    while go_on():
        with database.begin() as conn:
            keys = [tuple(r) for r in conn.execute(select_keys.limit(size))]
            if not keys:
                return
            for part in chunks(keys, IN_LIST_MAX):
                delete_keys(conn, part)
        result.batches += 1


def _count(database: Database, stmt: Select[Any]) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())


def _prune_calibration(database: Database, policy: Policy, now: datetime, result: PruneResult,
                       go_on: Callable[[], bool]) -> None:
    cutoff = now - _days(policy.models_days)
    stmt = _stale_calibration(cutoff)
    if result.dry_run:
        result.rows["calibration"] += _count(database, stmt)
        return

    def drop(conn: Connection, keys: list[tuple[Any, ...]]) -> None:
        c = cal_t
        result.rows["calibration"] += conn.execute(delete(c).where(
            tuple_(c.c.exchange, c.c.symbol, c.c.interval, c.c.model_id).in_(keys), c.c.updated_at < cutoff)
        ).rowcount

    _batches(database, result, stmt, policy.batch_rows, drop, go_on)


def _ended_terms(cutoff: datetime) -> Select[Any]:
    c = champ_t
    return select(c.c.id).where(c.c.ended_at.is_not(None), c.c.ended_at < cutoff).order_by(c.c.ended_at, c.c.id)


def _prune_terms(database: Database, policy: Policy, now: datetime, result: PruneResult,
                 go_on: Callable[[], bool]) -> None:
    """Champion terms ended before the cut-off (never an open one), before the models they kept."""
    cutoff = now - _days(policy.models_days)
    stmt = _ended_terms(cutoff)
    if result.dry_run:
        result.rows["champion_history"] += _count(database, stmt)
        return

    def drop(conn: Connection, keys: list[tuple[Any, ...]]) -> None:
        c = champ_t
        result.rows["champion_history"] += conn.execute(delete(c).where(
            c.c.id.in_([k[0] for k in keys]), c.c.ended_at.is_not(None), c.c.ended_at < cutoff)).rowcount

    _batches(database, result, stmt, policy.batch_rows, drop, go_on)


def _unreferenced_models(conn: Connection, cutoff: datetime, ids: list[str] | None = None, *,
                         ended_terms_go: bool = False) -> set[str]:
    """Ids of the model rows (of `ids`, default all) that may go bar the per-series checks:
    retired, created before the cut-off, no champion term (`ended_terms_go`: none the same
    prune keeps, for the selection; the delete itself wants none left, the foreign key), no
    calibration state but stale ones (which the same prune deletes first). Three set-based
    reads, each one pass, not a lookup per model: calibration has no index by model, so a
    correlated NOT EXISTS scanned it once per model (on SQLite; 11,000 models: 2.5 s)."""
    m, c, cal = models_t, champ_t, cal_t

    def among(column: Any) -> list[Any]:
        return [] if ids is None else [column.in_(ids)]

    found = set(conn.execute(select(m.c.id).where(
        m.c.status == "retired", m.c.created_at < cutoff, *among(m.c.id))).scalars())
    if found:
        kept = [or_(c.c.ended_at.is_(None), c.c.ended_at >= cutoff)] if ended_terms_go else []
        found -= set(conn.execute(select(c.c.model_id).distinct().where(*kept, *among(c.c.model_id))).scalars())
    if found:
        found -= set(conn.execute(select(cal.c.model_id).distinct().where(
            ~_is_stale(cal, cutoff), *among(cal.c.model_id))).scalars())
    return found


#: Up to this many series with models to check, the forecast check reads each series' own range
#: of the forecasts key (an index seek each); above, one grouped pass over the whole table costs
#: less than that many queries (1,000 series: 0.2 s against 1.7-2.3 s, bench/retention_models.py).
SEEK_SERIES = 32


def expired_models(database: Database, policy: Policy, now: datetime,
                   pending: dict[tuple[SeriesKey, str], int] | None = None) -> list[str]:
    """Ids of the model rows that may go (see the module's rules), oldest first. `pending`: the
    forecast sets per (series, model) a dry run counted as going, so that it counts a model whose
    forecasts all go as the real prune would."""
    m = models_t
    cutoff = now - _days(policy.models_days)
    with database.engine.connect() as conn:
        everyone = conn.execute(select(m.c.id, m.c.series).order_by(m.c.created_at.desc(), m.c.id)).all()
        candidates = _unreferenced_models(conn, cutoff, ended_terms_go=True)
        kept: set[str] = set()
        seen: dict[str, int] = {}
        for model_id, series in everyone:  # newest first: the newest keep_models of each series stay
            for s in series or ["(none)"]:
                seen[s] = seen.get(s, 0) + 1
                if seen[s] <= policy.keep_models:
                    kept.add(model_id)
        order = [mid for mid, _ in reversed(everyone) if mid in candidates and mid not in kept]
        series_of = {mid: [SeriesKey.parse(x) for x in series or []] for mid, series in everyone}
        by_series: dict[SeriesKey, set[str]] = {}
        for model_id in order:
            for key in series_of[model_id]:
                by_series.setdefault(key, set()).add(model_id)
        # only champions forecast, but a forecast naming the model keeps it all the same
        named = _forecasting(conn, by_series, pending or {})
    return [mid for mid in order if mid not in named]


def _forecasting(conn: Connection, by_series: dict[SeriesKey, set[str]],
                 pending: dict[tuple[SeriesKey, str], int]) -> set[str]:
    """Those of the models asked about (per series) with forecasts of that series left once the
    `pending` sets have gone: the sets per (series, model), read by index seeks of the few series
    asked about, or by one grouped pass over the table when many are (set-based: not a query and
    a pass over its index range per series)."""
    if not by_series:
        return set()
    f = fc_t
    cols = (f.c.exchange, f.c.symbol, f.c.interval, f.c.model_id)
    if len(by_series) <= SEEK_SERIES:
        stmts = [select(*cols, func.count()).where(series_is(f, key), f.c.step == 1, f.c.model_id.in_(chunk))
                 .group_by(*cols) for key, ids in by_series.items() for chunk in chunks(sorted(ids), IN_LIST_MAX)]
    else:
        stmts = [select(*cols, func.count()).where(f.c.step == 1).group_by(*cols)]
    named: set[str] = set()
    for stmt in stmts:
        for exchange, symbol, interval, model_id, n in conn.execute(stmt):
            key = SeriesKey(exchange, symbol, interval)
            if model_id in by_series.get(key, ()) and int(n) > pending.get((key, model_id), 0):
                named.add(model_id)
    return named


def _prune_models(database: Database, policy: Policy, now: datetime, result: PruneResult,
                  go_on: Callable[[], bool]) -> None:
    ids = expired_models(database, policy, now, result.pending)
    if result.dry_run:
        result.rows["models"] += len(ids)
        if ids:
            with database.engine.connect() as conn:
                result.rows["model_artifacts"] += sum(int(conn.execute(select(func.count()).select_from(art_t).where(
                    art_t.c.model_id.in_(part))).scalar_one()) for part in chunks(ids, IN_LIST_MAX))
        return
    cutoff = now - _days(policy.models_days)
    for batch in chunks(ids, min(policy.batch_rows, IN_LIST_MAX)):  # the ids are named in IN lists
        if not go_on():
            return
        with database.begin() as conn:
            lock_champions(conn)  # no promotion of one of them meanwhile
            gone = sorted(_unreferenced_models(conn, cutoff, batch))
            if gone:
                result.rows["model_artifacts"] += conn.execute(
                    delete(art_t).where(art_t.c.model_id.in_(gone))).rowcount
                result.rows["models"] += conn.execute(delete(models_t).where(models_t.c.id.in_(gone))).rowcount
        result.batches += 1


def _finished_jobs(cutoff: datetime) -> Select[Any]:
    j = jobs_t
    return (select(j.c.id).where(j.c.status.in_(("done", "failed")), j.c.finished_at < cutoff)
            .order_by(j.c.finished_at, j.c.id))


def _prune_jobs(database: Database, policy: Policy, now: datetime, result: PruneResult,
                go_on: Callable[[], bool]) -> None:
    stmt = _finished_jobs(now - _days(policy.jobs_days))
    if result.dry_run:
        result.rows["training_jobs"] += _count(database, stmt)
        return

    def drop(conn: Connection, keys: list[tuple[Any, ...]]) -> None:
        j = jobs_t
        result.rows["training_jobs"] += conn.execute(delete(j).where(
            j.c.id.in_([k[0] for k in keys]), j.c.status.in_(("done", "failed")))).rowcount

    _batches(database, result, stmt, policy.batch_rows, drop, go_on)


def _prune_gaps(database: Database, policy: Policy, now: datetime, result: PruneResult,
                go_on: Callable[[], bool]) -> None:
    cutoff = now - _days(policy.gaps_days)
    g = gaps_t
    stmt = select(g.c.id).where(g.c.detected_at < cutoff).order_by(g.c.detected_at, g.c.id)
    if result.dry_run:
        result.rows["feed_gaps"] += _count(database, stmt)
        return

    def drop(conn: Connection, keys: list[tuple[Any, ...]]) -> None:
        result.rows["feed_gaps"] += conn.execute(delete(g).where(
            g.c.id.in_([k[0] for k in keys]), g.c.detected_at < cutoff)).rowcount

    _batches(database, result, stmt, policy.batch_rows, drop, go_on)


# --- the whole prune ---------------------------------------------------------------------------


def prune(database: Database, policy: Policy, *, dry_run: bool = False, now: datetime | None = None,
          go_on: Callable[[], bool] | None = None) -> PruneResult:
    """Prune by `policy` (dry run: count what would go, delete nothing). `go_on` is asked before
    each batch (renew a lease, pause for the live writer); False stops the prune there."""
    t0 = time.monotonic()
    now = now or datetime.now(UTC)
    result = PruneResult(dry_run=dry_run)
    stopped = False

    def going() -> bool:
        nonlocal stopped
        if stopped or (go_on is not None and not go_on()):
            stopped = True
        return not stopped

    if policy.forecasts_days:
        _prune_forecasts(database, policy, result, going)
    if policy.models_days:
        _prune_calibration(database, policy, now, result, going)
        _prune_terms(database, policy, now, result, going)
        _prune_models(database, policy, now, result, going)
    if policy.jobs_days:
        _prune_jobs(database, policy, now, result, going)
    if policy.gaps_days:
        _prune_gaps(database, policy, now, result, going)
    result.complete = not stopped
    result.seconds = time.monotonic() - t0
    return result


@dataclass(frozen=True, slots=True)
class Busy:
    """Another process holds the prune lease."""

    owner: str
    until: datetime


def prune_with_lease(database: Database, policy: Policy, owner: str, *, dry_run: bool = False,
                     ttl: timedelta = timedelta(minutes=10), pause_s: float = 0.0,
                     go_on: Callable[[], bool] | None = None, now: datetime | None = None) -> PruneResult | Busy:
    """`prune` while holding the `retention` lease, renewed before each batch, so of several
    daemons (or a daemon and `barcast db prune`) on one database one prunes at a time; `Busy`
    when another holds it. A dry run reads only and needs no lease. `pause_s` between batches
    lets the live writer take SQLite's write lock; `go_on` (asked before each batch) False stops
    the prune there (the daemon is stopping)."""
    if dry_run:
        return prune(database, policy, dry_run=True, now=now, go_on=go_on)
    if not leases.acquire(database, LEASE, owner, ttl):
        held = leases.holder(database, LEASE)
        if held is not None:
            return Busy(*held)
        if not leases.acquire(database, LEASE, owner, ttl):  # it expired meanwhile
            held = leases.holder(database, LEASE)
            return Busy(*(held or ("another process", datetime.now(UTC))))
    renewed = time.monotonic()
    first = True

    def renew() -> bool:
        nonlocal first, renewed
        if not first and pause_s:
            time.sleep(pause_s)
        first = False
        if go_on is not None and not go_on():
            return False
        if time.monotonic() - renewed < ttl.total_seconds() / 3:
            return True
        if leases.acquire(database, LEASE, owner, ttl):
            renewed = time.monotonic()
            return True
        log.warning("prune stopped: its lease was taken over", extra={"owner": owner})
        return False

    try:
        return prune(database, policy, now=now, go_on=renew)
    finally:
        leases.release(database, LEASE, owner)


def vacuum(database: Database, tables: tuple[str, ...] = PRUNED_TABLES) -> None:
    """Give the space of deleted rows back. SQLite: VACUUM rewrites the file without them (it
    holds the write lock meanwhile, and needs free disk for a copy of the database), then the
    WAL is truncated; deleting rows alone never shrinks the file, it only leaves pages for reuse.
    PostgreSQL: VACUUM (ANALYZE) of the pruned tables makes their space reusable at once and
    refreshes the planner's statistics (autovacuum would do it later; the files do not shrink)."""
    if database.dialect == "sqlite":
        raw = database.engine.raw_connection()  # no BEGIN: VACUUM cannot run in a transaction
        try:
            raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        except sqlite3.Error as exc:
            raise DatabaseError(f"database {database.display_url}: VACUUM failed: {exc}") from None
        finally:
            raw.close()
        return
    with database.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in tables:
            conn.exec_driver_sql(f'VACUUM (ANALYZE) "{name}"')
