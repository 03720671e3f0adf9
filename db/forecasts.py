"""Forecast storage: one row per horizon step, written exactly once per (series, bar, model)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, and_, func, select, text, true

from db.cluster import REJECTED, Fence, fenced
from db.dialect import chunks, insert_for
from db.engine import Database
from db.records import Forecast, SeriesKey
from db.schema import forecast_seq as seq_t
from db.schema import forecasts as fc_t
from db.schema import series_in, series_is


def _rows(f: Forecast, issued_by: str | None = None) -> list[dict[str, Any]]:
    rows = []
    levels = None if f.levels is None else [float(x) for x in f.levels]
    for i, (t, c) in enumerate(zip(f.target_times, f.closes, strict=True)):
        rows.append(
            {
                "exchange": f.series.exchange,
                "symbol": f.series.symbol,
                "interval": f.series.interval,
                "issued_at": f.issued_at,
                "model_id": f.model_id,
                "step": i + 1,
                "target_time": t,
                "predicted": float(c),
                "lower": None if f.lower is None else float(f.lower[i]),
                "upper": None if f.upper is None else float(f.upper[i]),
                "last_close": f.last_close,
                "latency_ms": f.latency_ms,
                "created_at": f.created_at,
                "issued_by": issued_by or f.issued_by,
                "levels": levels,
                "quantiles": None if f.quantiles is None else [float(v) for v in f.quantiles[i]],
            }
        )
    return rows


def insert_forecasts(database: Database, forecasts: Iterable[Forecast]) -> int:
    """Store forecasts; one already stored is left as it was. Returns step rows newly written."""
    return sum(len(f.closes) for f in store_new_forecasts(database, list(forecasts)))


def store_new_forecasts(database: Database, forecasts: list[Forecast], *, fence: Fence | None = None,
                        once_per_bar: bool = False) -> list[Forecast]:
    """Store forecasts in one transaction and return those that were not stored before, so a
    replay after a restart neither duplicates rows nor writes a second forecast-log line.
    With `fence` (a daemon sharing the database), forecasts of series it no longer owns are
    refused and `issued_by` is the fence's owner. `once_per_bar` (the live daemon): a bar that
    already has a forecast set, from any model, gets no second one (a bar forecast again after a
    resynchronisation while a promotion swapped the model)."""
    issued_by = fence.owner if fence is not None else None
    if not forecasts:
        return []
    seqs: dict[tuple[Any, ...], int] = {}
    with database.begin() as conn:
        if fence is not None:
            ok = fenced(conn, fence, {f.series for f in forecasts}, "forecasts")
            REJECTED.add("forecasts", sum(1 for f in forecasts if f.series not in ok))
            forecasts = [f for f in forecasts if f.series in ok]
        if once_per_bar and forecasts:
            done = _issued(conn, {f.series for f in forecasts}, min(f.issued_at for f in forecasts))
            forecasts = [f for f in forecasts if f.issued_at not in done.get(f.series, ())]
        rows = [r for f in forecasts for r in _rows(f, issued_by)]
        if conn.dialect.name == "postgresql" and len(rows) > COPY_ABOVE_ROWS:
            seqs.update(_copy_new(conn, rows))
        else:
            fresh: set[tuple[Any, ...]] = set()
            for batch in chunks(rows, 2000):
                fresh.update(tuple(r) for r in conn.execute(_insert_new(database), batch).all())
            seqs.update(_number(conn, [r for r in rows if r["step"] == 1 and _key(r) in fresh]))
    new = [replace(f, issued_by=issued_by or f.issued_by, seq=seqs[k]) for f in forecasts
           if (k := (f.series.exchange, f.series.symbol, f.series.interval, f.issued_at, f.model_id)) in seqs]
    return sorted(new, key=lambda f: f.seq or 0)


_KEY = ("exchange", "symbol", "interval", "issued_at", "model_id")


def _key(row: Any) -> tuple[Any, ...]:
    return tuple(row[c] for c in _KEY)


#: PostgreSQL: the next stream position (the `seq` column's own sequence).
_NEXT_PG = "nextval(pg_get_serial_sequence('forecast_seq', 'seq'))"


def _number(conn: Connection, firsts: list[dict[str, Any]]) -> dict[tuple[Any, ...], int]:
    """Give newly stored forecasts (their step-1 rows) their stream positions, in this order.

    A position left behind by a forecast deleted by hand (its rows gone, its position not) is
    renumbered as the newest: the forecast is new to the stream again, and its store must not
    fail on the old row (it did: a unique violation, retried for good)."""
    if not firsts:
        return {}
    ins = insert_for(conn, seq_t)
    nxt: Any = (text(_NEXT_PG) if conn.dialect.name == "postgresql"
                else select(func.coalesce(func.max(seq_t.c.seq), 0) + 1).scalar_subquery())
    stmt = ins.on_conflict_do_update(
        index_elements=[seq_t.c[c] for c in _KEY], set_={"seq": nxt, "issued_by": ins.excluded.issued_by},
    ).returning(seq_t.c.seq, *(seq_t.c[c] for c in _KEY), sort_by_parameter_order=True)
    params = [{c: r[c] for c in (*_KEY, "issued_by")} for r in firsts]
    return {tuple(r[1:]): r[0] for r in conn.execute(stmt, params).all()}


#: Above this many step rows PostgreSQL gets them by COPY (a multi-row INSERT costs ~0.2 ms a row).
COPY_ABOVE_ROWS = 200
_COLUMNS = [c.name for c in fc_t.columns]
_JSON_COLUMNS = {"levels", "quantiles"}


def _copy_new(conn: Connection, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], int]:
    """PostgreSQL: COPY the rows into a session temp table, then one statement that inserts them
    (ON CONFLICT DO NOTHING) and numbers the forecasts that were new (as `_insert_new` and
    `_number` do): their stream positions by forecast key."""
    cols = ", ".join(f'"{c}"' for c in _COLUMNS)
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS forecasts_in (LIKE forecasts) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY forecasts_in ({cols}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([orjson.dumps(r[c]).decode() if c in _JSON_COLUMNS and r[c] is not None else r[c]
                                for c in _COLUMNS])
        key = '"exchange", "symbol", "interval", "issued_at", "model_id"'
        cur.execute(
            f"WITH new AS (INSERT INTO forecasts ({cols}) SELECT {cols} FROM forecasts_in "
            f'ON CONFLICT ({key}, "step") DO NOTHING RETURNING {key}, "step", "issued_by") '
            f'INSERT INTO forecast_seq ({key}, "issued_by") SELECT {key}, "issued_by" FROM new '
            f'WHERE "step" = 1 ORDER BY "issued_at", "exchange", "symbol", "interval", "model_id" '
            f'ON CONFLICT ({key}) DO UPDATE SET "seq" = {_NEXT_PG}, "issued_by" = EXCLUDED."issued_by" '
            f'RETURNING "seq", {key}')
        out = {tuple(r[1:]): r[0] for r in cur.fetchall()}
        cur.execute("TRUNCATE forecasts_in")
    return out


def _insert_new(database: Database) -> Any:
    return (
        insert_for(database, fc_t)
        .on_conflict_do_nothing(
            index_elements=["exchange", "symbol", "interval", "issued_at", "model_id", "step"]
        )
        .returning(fc_t.c.exchange, fc_t.c.symbol, fc_t.c.interval, fc_t.c.issued_at, fc_t.c.model_id)
    )


def _issued(conn: Connection, series: Collection[SeriesKey], since: datetime) -> dict[SeriesKey, set[datetime]]:
    keys = list(series)
    stmt = (
        select(fc_t.c.exchange, fc_t.c.symbol, fc_t.c.interval, fc_t.c.issued_at)
        .where(series_in(fc_t, keys), fc_t.c.issued_at >= since, fc_t.c.step == 1)
    )
    out: dict[SeriesKey, set[datetime]] = {}
    for r in conn.execute(stmt):
        out.setdefault(SeriesKey(r[0], r[1], r[2]), set()).add(r[3])
    return out


def issued_times(database: Database, series: Collection[SeriesKey], since: datetime) -> dict[SeriesKey, set[datetime]]:
    """The bars of each of `series` since `since` that have a forecast set (any model), one query:
    what a window restore replays is the stored bars missing from it."""
    if not series:
        return {}
    with database.engine.connect() as conn:
        return _issued(conn, series, since)


def _assemble(rows: Sequence[Any]) -> list[Forecast]:
    """Group step rows (ordered by forecast then step) back into Forecast records."""
    out: list[Forecast] = []
    group: list[Any] = []

    def flush() -> None:
        if not group:
            return
        g0 = group[0]
        has_bounds = all(r.lower is not None and r.upper is not None for r in group)
        has_q = all(r.quantiles is not None and r.levels is not None for r in group)
        out.append(
            Forecast(
                series=SeriesKey(g0.exchange, g0.symbol, g0.interval),
                issued_at=g0.issued_at,
                model_id=g0.model_id,
                target_times=tuple(r.target_time for r in group),
                closes=tuple(r.predicted for r in group),
                lower=tuple(r.lower for r in group) if has_bounds else None,
                upper=tuple(r.upper for r in group) if has_bounds else None,
                last_close=g0.last_close,
                latency_ms=g0.latency_ms,
                created_at=g0.created_at,
                issued_by=g0.issued_by,
                levels=tuple(float(x) for x in g0.levels) if has_q else None,
                quantiles=tuple(tuple(float(v) for v in r.quantiles) for r in group) if has_q else None,
                seq=g0._mapping.get("seq"),
            )
        )
        group.clear()

    key = None
    for r in rows:
        k = (r.exchange, r.symbol, r.interval, r.issued_at, r.model_id)
        if k != key:
            flush()
            key = k
        group.append(r)
    flush()
    return out


def query_forecasts(
    database: Database,
    series: SeriesKey | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model_id: str | None = None,
    limit: int | None = None,
) -> list[Forecast]:
    """Forecasts newest issued first, `since <= issued_at < until`, at most `limit` forecasts."""
    cond: list[Any] = []
    if series is not None:
        cond.append(series_is(fc_t, series))
    if since is not None:
        cond.append(fc_t.c.issued_at >= since)
    if until is not None:
        cond.append(fc_t.c.issued_at < until)
    if model_id is not None:
        cond.append(fc_t.c.model_id == model_id)
    keys = (
        select(fc_t.c.exchange, fc_t.c.symbol, fc_t.c.interval, fc_t.c.issued_at, fc_t.c.model_id)
        .where(and_(true(), *cond))
        .distinct()
        .order_by(fc_t.c.issued_at.desc(), fc_t.c.exchange, fc_t.c.symbol, fc_t.c.model_id)
    )
    if limit is not None:
        keys = keys.limit(limit)
    sub = keys.subquery()
    stmt = (
        select(fc_t)
        .join(
            sub,
            and_(
                fc_t.c.exchange == sub.c.exchange,
                fc_t.c.symbol == sub.c.symbol,
                fc_t.c.interval == sub.c.interval,
                fc_t.c.issued_at == sub.c.issued_at,
                fc_t.c.model_id == sub.c.model_id,
            ),
        )
        .order_by(fc_t.c.issued_at.desc(), fc_t.c.exchange, fc_t.c.symbol, fc_t.c.model_id, fc_t.c.step)
    )
    with database.engine.connect() as conn:
        return _assemble(conn.execute(stmt).all())


@dataclass(frozen=True)
class StreamPage:
    """What a resuming stream client missed: `forecasts` (oldest first, each with its `seq`),
    `top` (the newest position in scope when read: live forecasts at or below it were read
    here, or skipped) and `skipped` (positions after the client's left out by the bound)."""

    forecasts: list[Forecast]
    top: int
    skipped: int


def stream_after(database: Database, after: int, *, series: SeriesKey | None = None,
                 issued_by: str | None = None, limit: int) -> StreamPage:
    """The newest `limit` forecasts stored after stream position `after` (of `series`; of those
    issued by `issued_by` when given), in stream order.

    Positions are taken in the storing transaction, and a daemon stores from one writer thread,
    so among one issuer's forecasts a position is visible only once every lower one is: reading
    `top` first and then `after < seq <= top` can leave out no forecast of that issuer."""
    scope = [] if issued_by is None else [seq_t.c.issued_by == issued_by]
    with database.engine.connect() as conn:
        top = int(conn.execute(select(func.coalesce(func.max(seq_t.c.seq), 0)).where(*scope)).scalar_one())
        cond = [*scope, seq_t.c.seq > after, seq_t.c.seq <= top]
        if series is not None:
            cond.append(series_is(seq_t, series))
        newest = conn.execute(
            select(seq_t.c.seq).where(*cond).order_by(seq_t.c.seq.desc()).limit(limit + 1)).scalars().all()
        if not newest:
            return StreamPage([], top, 0)
        first = newest[min(limit, len(newest)) - 1]
        skipped = 0
        if len(newest) > limit:
            skipped = int(conn.execute(
                select(func.count()).select_from(seq_t).where(*cond, seq_t.c.seq < first)).scalar_one())
        stmt = (
            select(fc_t, seq_t.c.seq)
            .join(seq_t, and_(*(fc_t.c[c] == seq_t.c[c] for c in _KEY)))
            .where(*cond, seq_t.c.seq >= first)
            .order_by(seq_t.c.seq, fc_t.c.step)
        )
        return StreamPage(_assemble(conn.execute(stmt).all()), top, skipped)


def latest_forecast(database: Database, series: SeriesKey, model_id: str | None = None) -> Forecast | None:
    found = query_forecasts(database, series, model_id=model_id, limit=1)
    return found[0] if found else None


def latest_issued(database: Database, series: Collection[SeriesKey]) -> dict[SeriesKey, datetime]:
    """Issue time of the newest forecast of each of `series` (any model), in one query."""
    keys = list(series)
    if not keys:
        return {}
    stmt = (
        select(fc_t.c.exchange, fc_t.c.symbol, fc_t.c.interval,
               func.max(fc_t.c.issued_at, type_=fc_t.c.issued_at.type))
        .where(series_in(fc_t, keys))
        .group_by(fc_t.c.exchange, fc_t.c.symbol, fc_t.c.interval)
    )
    with database.engine.connect() as conn:
        return {SeriesKey(r[0], r[1], r[2]): r[3] for r in conn.execute(stmt)}


def forecast_model_ids(database: Database) -> list[str]:
    """Every model id that has stored forecasts (the valid choices of a `--model` filter)."""
    with database.engine.connect() as conn:
        return sorted(conn.execute(select(fc_t.c.model_id).distinct()).scalars())
