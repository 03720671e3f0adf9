"""Retention's model check at many series, before and after, side by side in one run: which
retired models may go (the selection and the check that none still has forecasts), and the
transactions that delete them.

    python bench/retention_models.py [--series 1000] [--sets 100] [--models 10] [--terms 5] [--db URL]

Fills a database (a temporary SQLite file unless --db; a PostgreSQL URL must name an empty
database, and its server must let the user CREATE DATABASE for the copy) with `--series`
5-minute series, each with bars, `--sets` forecast sets of its champion (16 steps, a quantile
fan) and its calibration state, `--models` retired models older than `models_days` (the newest
`keep_models` stay anyway) of which one has a forecast set, and `--terms` past champions whose
terms ended within `models_days` (so both rules keep them). Then:

- the selection, before (a correlated NOT EXISTS per model on champion terms and calibration,
  then one grouped query per series over its forecast index) and after
  (`db.retention.expired_models`), best of `--repeat`, with the ids each returns compared;
- the deletes of those models (models only: forecasts, jobs kept), before on a copy without the
  `ix_champion_history_model` index (migration 0011) and with the old per-batch check, after on
  the database as it is: seconds, and the longest write transaction (SQLite: its write lock).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import and_, create_engine, delete, event, exists, func, insert, select, text

from db import retention
from db.bars import upsert_bars
from db.dialect import chunks
from db.engine import Database, normalise_url, open_database
from db.forecasts import insert_forecasts
from db.records import Bar, Forecast, SeriesKey
from db.registry import lock_champions
from db.retention import Policy, prune
from db.schema import calibration, champion_history, model_artifacts, models, series_is
from db.schema import forecasts as fc_t
from db.stats import table_counts

HORIZON = 16
LEVELS = (0.1, 0.5, 0.9)
DAY = timedelta(days=1)
INDEX = "ix_champion_history_model"


def series(n: int) -> list[SeriesKey]:
    return [SeriesKey("bench", f"S{i:04d}-USDT", "5m") for i in range(n)]


def _forecast(key: SeriesKey, t: datetime, model_id: str) -> Forecast:
    targets = tuple(t + key.step * (k + 1) for k in range(HORIZON))
    closes = tuple(100.0 + k for k in range(HORIZON))
    quantiles = tuple((c * 0.99, c, c * 1.01) for c in closes)
    return Forecast(key, t, model_id, targets, closes, last_close=Decimal("100"), latency_ms=4.0, created_at=t,
                    issued_by="bench", levels=LEVELS, quantiles=quantiles)


def fill(database: Database, keys: list[SeriesKey], sets: int, retired: int, terms: int, now: datetime) -> None:
    """Bars and forecasts of each series, its models, champion terms and calibration state (the
    registry rows are written directly: thousands of promotions through the registry take minutes)."""
    first = now.replace(second=0, microsecond=0, minute=0) - timedelta(minutes=5 * (sets + HORIZON))
    times = [first + timedelta(minutes=5 * i) for i in range(sets + HORIZON)]
    p = Decimal(100)
    for group in chunks(keys, 20):
        upsert_bars(database, [Bar(k.exchange, k.symbol, k.interval, t, p, p, p, p, Decimal(1), source="import")
                               for k in group for t in times])
        fcs = [_forecast(k, t, f"champ-{k.symbol}") for k in group for t in times[:sets]]
        fcs += [_forecast(k, times[0], f"fc-{k.symbol}") for k in group]  # a retired model's forecast
        insert_forecasts(database, fcs)
    rows: list[dict[str, Any]] = []
    past: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    for k in keys:
        made = [(f"champ-{k.symbol}", "champion", 1), (f"fc-{k.symbol}", "retired", 300)]
        made += [(f"r{j}-{k.symbol}", "retired", 200 + j) for j in range(retired)]
        made += [(f"t{j}-{k.symbol}", "retired", 300 + j) for j in range(terms)]
        rows += [{"id": mid, "arch": "linear", "series": [str(k)], "status": status, "params": {}, "metrics": {},
                  "created_at": now - age * DAY} for mid, status, age in made]
        base = {"exchange": k.exchange, "symbol": k.symbol, "interval": k.interval}
        for j in range(terms):  # past champions, their terms ended within models_days
            past.append({**base, "model_id": f"t{j}-{k.symbol}", "started_at": now - (60 - 2 * j) * DAY,
                         "ended_at": now - (59 - 2 * j) * DAY, "reason": "bench"})
        past.append({**base, "model_id": f"champ-{k.symbol}", "started_at": now - 10 * DAY, "ended_at": None,
                     "reason": "bench"})
        states.append({**base, "model_id": f"champ-{k.symbol}", "state": {"n": 1}, "updated_at": now})
    with database.begin() as conn:
        for table, batch in ((models, rows), (champion_history, past), (calibration, states)):
            for part in chunks(batch, 2000):
                conn.execute(insert(table), part)


# --- before: retention's model selection and deletes as they were --------------------------------


def _unreferenced_before(cutoff: datetime) -> Any:
    m, c, cal = models, champion_history, calibration
    champion_now = exists().where(c.c.exchange == cal.c.exchange, c.c.symbol == cal.c.symbol,
                                  c.c.interval == cal.c.interval, c.c.model_id == cal.c.model_id,
                                  c.c.ended_at.is_(None))
    return and_(m.c.status == "retired", m.c.created_at < cutoff, ~exists().where(c.c.model_id == m.c.id),
                ~exists().where(cal.c.model_id == m.c.id, ~and_(cal.c.updated_at < cutoff, ~champion_now)))


def expired_models_before(database: Database, policy: Policy, now: datetime) -> list[str]:
    """`db.retention.expired_models` as it was: correlated lookups per model, then one grouped
    query per series with candidate models (each a pass over that series' forecast index)."""
    m = models
    cutoff = now - timedelta(days=policy.models_days)
    with database.engine.connect() as conn:
        everyone = conn.execute(select(m.c.id, m.c.series).order_by(m.c.created_at.desc(), m.c.id)).all()
        candidates = {r[0] for r in conn.execute(select(m.c.id).where(_unreferenced_before(cutoff)))}
        kept: set[str] = set()
        seen: dict[str, int] = {}
        for model_id, ss in everyone:
            for s in ss or ["(none)"]:
                seen[s] = seen.get(s, 0) + 1
                if seen[s] <= policy.keep_models:
                    kept.add(model_id)
        order = [mid for mid, _ in reversed(everyone) if mid in candidates and mid not in kept]
        by_series: dict[SeriesKey, list[str]] = {}
        for model_id, ss in everyone:
            if model_id in candidates and model_id not in kept:
                for x in ss or []:
                    by_series.setdefault(SeriesKey.parse(x), []).append(model_id)
        named: set[str] = set()
        for key, ids in by_series.items():
            for chunk in chunks(ids, 5000):
                stmt = (select(fc_t.c.model_id, func.count()).where(
                    series_is(fc_t, key), fc_t.c.step == 1, fc_t.c.model_id.in_(chunk)).group_by(fc_t.c.model_id))
                named.update(mid for mid, n in conn.execute(stmt) if int(n) > 0)
    return [mid for mid in order if mid not in named]


def delete_models_before(database: Database, policy: Policy, now: datetime) -> int:
    """`_prune_models` as it was: each batch re-checked by the correlated lookups, then deleted."""
    cutoff = now - timedelta(days=policy.models_days)
    n = 0
    for batch in chunks(expired_models_before(database, policy, now), policy.batch_rows):
        with database.begin() as conn:
            lock_champions(conn)
            gone = [r[0] for r in conn.execute(select(models.c.id).where(models.c.id.in_(batch),
                                                                          _unreferenced_before(cutoff)))]
            conn.execute(delete(model_artifacts).where(model_artifacts.c.model_id.in_(gone)))
            n += conn.execute(delete(models).where(models.c.id.in_(gone))).rowcount
    return n


# --- copies ---------------------------------------------------------------------------------------


def copy_of(database: Database, url: str, tmp: Path) -> str:
    """A copy of the (closed) database: the file, or CREATE DATABASE … TEMPLATE."""
    if database.dialect == "sqlite":
        to = tmp / "before.db"
        shutil.copyfile(url.removeprefix("sqlite:///"), to)
        return f"sqlite:///{to}"
    server = normalise_url(url)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{server.database}_before" TEMPLATE "{server.database}"'))
    admin.dispose()
    return server.set(database=f"{server.database}_before").render_as_string(hide_password=False)


def drop_copy(url: str) -> None:
    if url.startswith("sqlite"):
        return
    server = normalise_url(url)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{server.database}" WITH (FORCE)'))
    admin.dispose()


def timed(database: Database, fn: Callable[[], object]) -> tuple[float, float, object]:
    """Seconds of `fn`, its longest write transaction, what it returned."""
    held: list[float] = []
    began: list[float] = []

    def begin(_: object) -> None:
        began.append(time.monotonic())

    def commit(_: object) -> None:
        held.append(time.monotonic() - began[-1])

    event.listen(database.engine, "begin", begin)
    event.listen(database.engine, "commit", commit)
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    event.remove(database.engine, "begin", begin)
    event.remove(database.engine, "commit", commit)
    return seconds, max(held, default=0.0), out


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    out: object = None
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--sets", type=int, default=100, help="forecast sets of each series")
    ap.add_argument("--models", type=int, default=10, help="old retired models of each series")
    ap.add_argument("--terms", type=int, default=5, help="past champions of each series (terms kept)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'retention-models.db'}"
        database = open_database(url)
        now = datetime.now(UTC)
        t0 = time.monotonic()
        fill(database, series(args.series), args.sets, args.models, args.terms, now)
        counts = table_counts(database)
        print(f"{database.dialect}: filled in {time.monotonic() - t0:.0f} s: {args.series:,} series, "
              f"{counts['forecasts']:,} forecast rows, {counts['models']:,} models, "
              f"{counts['champion_history']:,} champion terms, {counts['calibration']:,} calibration states")
        policy = Policy(forecasts_days=0, jobs_days=0, models_days=90, keep_models=5, horizon=HORIZON)
        if database.dialect == "postgresql":
            retention.vacuum(database)
        t_before, ids_before = best(lambda: set(expired_models_before(database, policy, now)), args.repeat)
        t_after, ids_after = best(lambda: set(retention.expired_models(database, policy, now)), args.repeat)
        same = "same ids" if ids_before == ids_after else "DIFFERENT ids"
        print(f"{'':<34} {'before':>10} {'after':>10}")
        print(f"{'selection + forecast check':<34} {t_before:>9.3f}s {t_after:>9.3f}s   "
              f"({len(ids_after):,} models, {same})")  # type: ignore[arg-type]
        database.close()

        before_url = copy_of(database, url, Path(tmp))
        old = open_database(before_url)
        with old.begin() as conn:
            conn.execute(text(f"DROP INDEX {INDEX}"))
        s_before, long_before, n_before = timed(old, lambda: delete_models_before(old, policy, now))
        old.close()
        drop_copy(before_url)
        database = open_database(url)
        s_after, long_after, done = timed(database, lambda: prune(database, policy, now=now))
        n_after = done.rows["models"]  # type: ignore[attr-defined]
        print(f"{'deleting them: seconds':<34} {s_before:>9.3f}s {s_after:>9.3f}s   "
              f"({n_before:,} / {n_after:,} models deleted)")
        print(f"{'  longest write transaction':<34} {long_before:>9.3f}s {long_after:>9.3f}s")
        database.close()


if __name__ == "__main__":
    main()
