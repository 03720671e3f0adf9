"""Online scores: realised errors of stored forecasts once their target bars have closed."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, and_, case, cast, func, select

from db.calibration import save_states
from db.cluster import Fence, lease_filter
from db.dialect import chunks, insert_for
from db.engine import Database
from db.records import CalibrationState, ForecastScore, SeriesKey
from db.schema import bars as bars_t
from db.schema import forecast_scores as sc_t
from db.schema import forecasts as fc_t
from db.schema import series_in, series_is


def _pinball_doc(s: ForecastScore) -> dict[str, float] | None:
    if s.pinball is None or s.levels is None:
        return None
    return {repr(float(level)): float(v) for level, v in zip(s.levels, s.pinball, strict=True)}


def insert_scores(
    database: Database, scores: Iterable[ForecastScore], calibration: Iterable[CalibrationState] = (), *,
    fence: Fence | None = None,
) -> int:
    """Store scores, and the calibration states they moved, in one transaction; a step already
    scored is left as it was. Returns rows newly written. With `fence` (daemons sharing the
    database), scores of series this daemon no longer owns are refused."""
    rows = [
        {
            "exchange": s.series.exchange,
            "symbol": s.series.symbol,
            "interval": s.series.interval,
            "issued_at": s.issued_at,
            "model_id": s.model_id,
            "step": s.step,
            "target_time": s.target_time,
            "actual": s.actual,
            "error": s.error,
            "persistence_error": s.persistence_error,
            "scored_at": s.scored_at,
            "pinball": _pinball_doc(s),
            "pinball_mean": s.pinball_mean,
            "inside": s.inside,
            "width": s.width,
            "climatology_pinball": s.climatology_pinball,
        }
        for s in scores
    ]
    states = list(calibration)
    if not rows:
        if states:
            with database.begin() as conn:
                save_states(database, conn, states)
        return 0
    stmt = (
        insert_for(database, sc_t)
        .on_conflict_do_nothing(index_elements=["exchange", "symbol", "interval", "issued_at", "model_id", "step"])
        .returning(sc_t.c.step)
    )
    written = 0
    with database.begin() as conn:
        rows = lease_filter(conn, fence, rows, "scores")
        for batch in chunks(rows, 2000):
            written += len(conn.execute(stmt, batch).all())
        save_states(database, conn, states)
    return written


@dataclass(frozen=True, slots=True)
class Unscored:
    """A forecast step whose target bar is stored but which has no score yet."""

    series: SeriesKey
    issued_at: datetime
    model_id: str
    step: int
    target_time: datetime
    predicted: float
    last_close: Any
    actual: Any
    levels: tuple[float, ...] | None = None
    quantiles: tuple[float, ...] | None = None


def unscored_steps(
    database: Database, series: SeriesKey | Collection[SeriesKey], *, until: datetime | None = None,
    issued_since: datetime | None = None,
) -> list[Unscored]:
    """Forecast steps of `series` (one, or many in one query: the live loop's set-based pass over
    every series of a bar) whose target bar exists and that are not scored yet (`issued_since`
    bounds the scan to recent forecasts: the live loop's per-bar pass)."""
    f, b, s = fc_t, bars_t, sc_t
    join_bar = and_(
        b.c.exchange == f.c.exchange, b.c.symbol == f.c.symbol, b.c.interval == f.c.interval,
        b.c.open_time == f.c.target_time,
    )
    join_score = and_(
        s.c.exchange == f.c.exchange, s.c.symbol == f.c.symbol, s.c.interval == f.c.interval,
        s.c.issued_at == f.c.issued_at, s.c.model_id == f.c.model_id, s.c.step == f.c.step,
    )
    keys = [series] if isinstance(series, SeriesKey) else list(series)
    if not keys:
        return []
    cond = [series_in(f, keys), s.c.step.is_(None)]
    if until is not None:
        cond.append(f.c.target_time <= until)
    if issued_since is not None:
        cond.append(f.c.issued_at >= issued_since)
    stmt = (
        select(f.c.exchange, f.c.symbol, f.c.interval, f.c.issued_at, f.c.model_id, f.c.step, f.c.target_time,
               f.c.predicted, f.c.last_close, b.c.close, f.c.levels, f.c.quantiles)
        .select_from(f.join(b, join_bar).outerjoin(s, join_score))
        .where(and_(*cond))
        .order_by(f.c.exchange, f.c.symbol, f.c.interval, f.c.issued_at, f.c.model_id, f.c.step)
    )
    by_key = {(k.exchange, k.symbol, k.interval): k for k in keys}
    with database.engine.connect() as conn:
        return [
            Unscored(by_key[(r.exchange, r.symbol, r.interval)], r.issued_at, r.model_id, r.step, r.target_time,
                     r.predicted, r.last_close, r.close,
                     None if r.levels is None or r.quantiles is None else tuple(float(x) for x in r.levels),
                     None if r.levels is None or r.quantiles is None else tuple(float(x) for x in r.quantiles))
            for r in conn.execute(stmt)
        ]


@dataclass(frozen=True, slots=True)
class StepAccuracy:
    """Live scores of one (series, model, step). The probabilistic ones are over the `n_quantile`
    scored steps that had quantiles (None when none had): mean pinball loss over the levels, the
    fraction of actuals inside [lowest, highest] quantile, the mean width of that interval,
    (with `per_level`) the mean pinball loss per level, keyed by the level, and probabilistic
    skill 1 - pinball / climatology's pinball over the steps that were scored against both."""

    series: SeriesKey
    model_id: str
    step: int
    n: int
    mae: float
    persistence_mae: float
    n_quantile: int = 0
    pinball_mean: float | None = None
    coverage: float | None = None
    width: float | None = None
    pinball: dict[float, float] | None = None
    prob_skill: float | None = None


def accuracy(
    database: Database,
    *,
    series: SeriesKey | Collection[SeriesKey] | None = None,
    model_id: str | None = None,
    since: datetime | None = None,
    per_level: bool = True,
) -> list[StepAccuracy]:
    """Live MAE per (series, model, step) and persistence's MAE on the same bars, with the
    probabilistic scores (`per_level=False` skips the per-level pinball pass, e.g. for gauges)."""
    s = sc_t
    cond: list[Any] = []
    if isinstance(series, SeriesKey):
        cond.append(series_is(s, series))
    elif series is not None:
        cond.append(series_in(s, list(series)))
    if model_id is not None:
        cond.append(s.c.model_id == model_id)
    if since is not None:
        cond.append(s.c.target_time >= since)
    where = and_(*cond) if cond else s.c.step.is_not(None)
    group = (s.c.exchange, s.c.symbol, s.c.interval, s.c.model_id, s.c.step)
    stmt = (
        select(
            *group,
            func.count(), func.avg(func.abs(s.c.error)), func.avg(func.abs(s.c.persistence_error)),
            func.count(s.c.pinball_mean), func.avg(s.c.pinball_mean),
            func.avg(cast(cast(s.c.inside, Integer), Float)), func.avg(s.c.width),
            # probabilistic skill: both losses over the same steps (scores with a reference)
            func.sum(case((s.c.climatology_pinball.is_not(None), s.c.pinball_mean))),
            func.sum(s.c.climatology_pinball),
        )
        .where(where)
        .group_by(*group)
        .order_by(*group)
    )
    with database.engine.connect() as conn:
        rows = conn.execute(stmt).all()
        levels = _per_level(conn, where) if per_level else {}

    def opt(v: Any) -> float | None:
        return None if v is None else float(v)

    def skill(model: Any, reference: Any) -> float | None:
        return None if model is None or not reference else 1.0 - float(model) / float(reference)

    return [
        StepAccuracy(
            SeriesKey(r[0], r[1], r[2]), r[3], int(r[4]), int(r[5]), float(r[6]), float(r[7]),
            int(r[8]), opt(r[9]), opt(r[10]), opt(r[11]), levels.get(tuple(r[:5])), skill(r[12], r[13]),
        )
        for r in rows
    ]


def _per_level(conn: Any, where: Any) -> dict[tuple[Any, ...], dict[float, float]]:
    """Mean pinball loss per level per (series, model, step), over the rows that have one."""
    s = sc_t
    stmt = select(s.c.exchange, s.c.symbol, s.c.interval, s.c.model_id, s.c.step, s.c.pinball).where(
        and_(where, s.c.pinball_mean.is_not(None))
    )
    sums: dict[tuple[Any, ...], dict[float, list[float]]] = {}
    for r in conn.execute(stmt):
        acc = sums.setdefault(tuple(r[:5]), {})
        for level, loss in (r.pinball or {}).items():
            tot = acc.setdefault(float(level), [0.0, 0.0])
            tot[0] += float(loss)
            tot[1] += 1.0
    return {k: {lv: t[0] / t[1] for lv, t in sorted(v.items())} for k, v in sums.items()}


def realised_closes(
    database: Database, series: SeriesKey, since: datetime, until: datetime
) -> dict[datetime, Any]:
    """Stored closes of `series` with `since <= open_time <= until`, by open time.

    What forecasts are compared with before (or without) online scoring: only two columns are
    read, so joining a page of forecasts with its target bars stays cheap.
    """
    b = bars_t
    stmt = select(b.c.open_time, b.c.close).where(
        and_(
            series_is(b, series), b.c.open_time >= since, b.c.open_time <= until,
        )
    )
    with database.engine.connect() as conn:
        return {r.open_time: r.close for r in conn.execute(stmt)}


def latest_scored_target(database: Database, *, series: SeriesKey | None = None,
                         model_id: str | None = None) -> datetime | None:
    """Target time of the newest scored step (the 'now' of accuracy windows, so replays of old
    data read the same as a live daemon)."""
    s = sc_t
    cond: list[Any] = []
    if series is not None:
        cond.append(series_is(s, series))
    if model_id is not None:
        cond.append(s.c.model_id == model_id)
    stmt = select(func.max(s.c.target_time, type_=s.c.target_time.type))
    if cond:
        stmt = stmt.where(and_(*cond))
    with database.engine.connect() as conn:
        value: datetime | None = conn.execute(stmt).scalar_one()
    return value
