"""The documents operators read: forecasts with their outcomes, accuracy, bars, models, status.

One builder per document, shared by the CLI (`barcast forecasts|accuracy|status`) and the HTTP
API, so a JSON key means the same thing in both and the README documents it once. Builders take
an open database and return plain JSON-ready dicts (times ISO-8601 UTC with a `Z`, exact prices
as decimal strings, model outputs as floats). Synchronous: the API runs them in its threadpool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from typing_extensions import TypedDict

from daemon.ops.durations import duration_seconds
from db import bars as db_bars
from db import cluster, registry, scores
from db import forecasts as db_forecasts
from db.engine import Database
from db.errors import InputError, UnknownNameError
from db.gaps import FeedGap
from db.records import Bar, Forecast, ModelInfo, SeriesKey, decimal_text, iso
from db.stats import database_size_bytes
from trainer.quantiles import level_name

#: The earliest time a query means: anything before it (an age reaching back past 1970, a year-1
#: timestamp) is "from the beginning", as the HTTP API documents.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _dec(v: Any) -> str | None:
    if v is None:
        return None
    return decimal_text(v if isinstance(v, Decimal) else Decimal(str(v)))


def window_since(database: Database, span: timedelta | None, *, series: SeriesKey | None = None,
                 model_id: str | None = None) -> datetime | None:
    """Start of an accuracy window of `span`, counted back from the newest scored target bar
    (for a live daemon that is about now; for replayed or imported data it is their end)."""
    if span is None:
        return None
    newest = scores.latest_scored_target(database, series=series, model_id=model_id)
    return back_from(newest or datetime.now(UTC), span)


def back_from(end: datetime, span: timedelta) -> datetime:
    """`end - span`, from the beginning (EARLIEST) when that reaches before 1970 or before year 1."""
    try:
        return max(end - span, EARLIEST)
    except OverflowError:
        return EARLIEST


def parse_window(text: str, name: str = "window") -> timedelta | None:
    """`90s`, `30m`, `12h`, `7d`, `2w`, or `all` (None: no lower bound)."""
    if text.strip().lower() == "all":
        return None
    seconds = duration_seconds(text)
    if seconds is not None:
        try:
            return timedelta(seconds=seconds)
        except OverflowError:  # more days than a timedelta holds: longer than any history
            return timedelta.max
    raise InputError(f"{name}: {text!r} is not a window like 30m, 12h, 7d or 'all'")


# Forecasts -----------------------------------------------------------------------------------


class ForecastDoc(TypedDict):
    series: str
    exchange: str
    symbol: str
    interval: str
    issued_at: str
    model_id: str
    last_close: str | None
    latency_ms: float | None
    created_at: str
    targets: list[str]
    closes: list[float]
    #: Quantile levels (ascending) and, per step, the served quantiles at them (price units,
    #: ascending); both null for point-only forecasts stored before quantiles existed.
    levels: list[float] | None
    quantiles: list[list[float]] | None
    #: Realised close of each target bar (decimal string), null until that bar is stored.
    actuals: list[str | None]
    #: predicted - actual per step, null until realised.
    errors: list[float | None]
    realised: int
    #: Mean absolute error over the realised steps, null when none is.
    mae: float | None


def forecast_doc(f: Forecast, actual: Mapping[datetime, Any]) -> ForecastDoc:
    actuals = [actual.get(t) for t in f.target_times]
    errors = [None if a is None else float(c) - float(a) for c, a in zip(f.closes, actuals, strict=True)]
    done = [abs(e) for e in errors if e is not None]
    return {
        "series": str(f.series),
        "exchange": f.series.exchange,
        "symbol": f.series.symbol,
        "interval": f.series.interval,
        "issued_at": iso(f.issued_at) or "",
        "model_id": f.model_id,
        "last_close": _dec(f.last_close),
        "latency_ms": f.latency_ms,
        "created_at": iso(f.created_at) or "",
        "targets": [iso(t) or "" for t in f.target_times],
        "closes": [float(c) for c in f.closes],
        "levels": None if f.levels is None else list(f.levels),
        "quantiles": None if f.quantiles is None else [list(q) for q in f.quantiles],
        "actuals": [_dec(a) for a in actuals],
        "errors": errors,
        "realised": len(done),
        "mae": sum(done) / len(done) if done else None,
    }


def with_outcomes(database: Database, found: Sequence[Forecast]) -> list[ForecastDoc]:
    """Forecast documents joined with the realised closes of their target bars."""
    spans: dict[SeriesKey, tuple[datetime, datetime]] = {}
    for f in found:
        if not f.target_times:
            continue
        lo, hi = min(f.target_times), max(f.target_times)
        if f.series in spans:
            lo, hi = min(lo, spans[f.series][0]), max(hi, spans[f.series][1])
        spans[f.series] = (lo, hi)
    actual = {s: scores.realised_closes(database, s, lo, hi) for s, (lo, hi) in spans.items()}
    return [forecast_doc(f, actual.get(f.series, {})) for f in found]


def forecast_docs(
    database: Database,
    series: SeriesKey | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model_id: str | None = None,
    limit: int | None = None,
) -> list[ForecastDoc]:
    """Stored forecasts, newest issued first, with realised closes and errors where known."""
    found = db_forecasts.query_forecasts(database, series, since=since, until=until, model_id=model_id, limit=limit)
    return with_outcomes(database, found)


def known_series(database: Database, configured: Iterable[SeriesKey] = ()) -> list[SeriesKey]:
    """Configured series first, then any other series with stored bars."""
    out = list(dict.fromkeys(configured))
    out += [s for s in db_bars.list_series(database) if s not in out]
    return out


def require_known(database: Database, configured: Iterable[SeriesKey], keys: Iterable[SeriesKey],
                  label: str = "--series") -> None:
    """A series that is neither configured nor stored is a typo (UnknownNameError listing the known
    ones); a configured one with nothing stored yet is not. What the CLI and the API both check."""
    configured = list(configured)
    for k in keys:
        if k not in configured and db_bars.latest_bar(database, k) is None:
            known = known_series(database, configured)
            listed = ", ".join(str(s) for s in known) or "none yet (`barcast ingest` or `barcast import-bars`)"
            raise UnknownNameError(f"{label} {k}: no such series in the config or the database (known: {listed})")


def require_model(database: Database, model_id: str | None, label: str = "--model") -> None:
    """A model id neither registered nor in stored forecasts is a typo (UnknownNameError listing
    the valid ones). What the CLI and the API both check."""
    if model_id is None:
        return
    ids = list(dict.fromkeys([m.id for m in registry.list_models(database)]
                             + db_forecasts.forecast_model_ids(database)))
    if model_id not in ids:
        shown = ", ".join(ids[:12]) + (f", … ({len(ids)} in all)" if len(ids) > 12 else "")
        raise UnknownNameError(f"{label} {model_id!r}: no such model (registered or forecasting: "
                               f"{shown or 'none'}; see `barcast models list`)")


def latest_docs(
    database: Database, series: Sequence[SeriesKey], *, model_id: str | None = None
) -> list[ForecastDoc]:
    """The newest forecast of each series that has one."""
    found = [f for s in series if (f := db_forecasts.latest_forecast(database, s, model_id)) is not None]
    return with_outcomes(database, found)


# Accuracy ------------------------------------------------------------------------------------


class AccuracyDoc(TypedDict):
    series: str
    model_id: str
    step: int
    horizon_minutes: int
    n: int
    mae: float
    persistence_mae: float
    #: 1 - mae / persistence_mae: above 0 beats persistence; null when persistence is exact.
    skill: float | None
    #: Probabilistic scores over the `n_quantile` scored steps that had quantiles (all null when
    #: none had): pinball loss per level (keys q10, q50, …), its mean over the levels, WIS
    #: (= 2 x mean pinball), the fraction of actuals inside the central interval [lowest,
    #: highest level] beside its nominal value, the interval's mean width (price units), and
    #: probabilistic skill 1 - pinball / climatology's pinball on the same bars (above 0 beats
    #: the unconditional fan; null until a step was scored against climatology).
    n_quantile: int
    pinball: dict[str, float] | None
    pinball_mean: float | None
    wis: float | None
    coverage: float | None
    nominal_coverage: float | None
    width: float | None
    prob_skill: float | None


def accuracy_docs(
    database: Database,
    *,
    series: SeriesKey | None = None,
    model_id: str | None = None,
    since: datetime | None = None,
) -> list[AccuracyDoc]:
    """Live MAE per (series, model, step) from the online scores, with persistence's on the same bars."""
    out: list[AccuracyDoc] = []
    for a in scores.accuracy(database, series=series, model_id=model_id, since=since):
        levels = sorted(a.pinball) if a.pinball else None
        out.append(
            {
                "series": str(a.series),
                "model_id": a.model_id,
                "step": a.step,
                "horizon_minutes": a.step * int(a.series.step.total_seconds()) // 60,
                "n": a.n,
                "mae": a.mae,
                "persistence_mae": a.persistence_mae,
                "skill": 1.0 - a.mae / a.persistence_mae if a.persistence_mae > 0 else None,
                "n_quantile": a.n_quantile,
                "pinball": None if not a.pinball else {level_name(lv): v for lv, v in sorted(a.pinball.items())},
                "pinball_mean": a.pinball_mean,
                "wis": None if a.pinball_mean is None else 2.0 * a.pinball_mean,
                "coverage": a.coverage,
                "nominal_coverage": None if not levels else round(levels[-1] - levels[0], 10),
                "width": a.width,
                "prob_skill": a.prob_skill,
            }
        )
    return out


# Bars and models -----------------------------------------------------------------------------


class BarDoc(TypedDict):
    series: str
    open_time: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    trade_count: int | None
    source: str


class GapDoc(TypedDict):
    series: str
    gap_start: str
    gap_end: str
    bars_missed: int
    bars_filled: int | None
    filled_at: str | None
    detected_at: str


#: The columns of a gap, in the order the CLI prints them.
GAP_COLUMNS = list(GapDoc.__annotations__)


def gap_doc(g: FeedGap) -> GapDoc:
    """A recorded feed gap as the CLI and the API show it: `bars_filled` is None until filled."""
    return {
        "series": str(g.series),
        "gap_start": iso(g.start) or "",
        "gap_end": iso(g.end) or "",
        "bars_missed": g.bars_missed,
        "bars_filled": g.bars_filled if g.filled_at is not None else None,
        "filled_at": iso(g.filled_at),
        "detected_at": iso(g.detected_at) or "",
    }


def bar_doc(b: Bar) -> BarDoc:
    return {
        "series": str(b.series),
        "open_time": iso(b.open_time) or "",
        "open": decimal_text(b.open),
        "high": decimal_text(b.high),
        "low": decimal_text(b.low),
        "close": decimal_text(b.close),
        "volume": decimal_text(b.volume),
        "trade_count": b.trade_count,
        "source": b.source,
    }


class ModelDoc(TypedDict):
    id: str
    arch: str
    series: list[str]
    status: str
    #: Series this model serves now (a shared model can serve several).
    champion_of: list[str]
    train_start: str | None
    train_end: str | None
    created_at: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    artifact_path: str | None


def model_docs(
    database: Database, *, series: SeriesKey | None = None, status: str | None = None
) -> list[ModelDoc]:
    models: list[ModelInfo] = registry.list_models(database, series=series, status=status)  # type: ignore[arg-type]
    champions: dict[str, list[str]] = {}
    for s in {s for m in models for s in m.series}:
        champ = registry.champion(database, s)
        if champ is not None:
            champions.setdefault(champ.id, []).append(str(s))
    return [
        {
            "id": m.id,
            "arch": m.arch,
            "series": [str(s) for s in m.series],
            "status": m.status,
            "champion_of": sorted(champions.get(m.id, [])),
            "train_start": iso(m.train_start),
            "train_end": iso(m.train_end),
            "created_at": iso(m.created_at) or "",
            "params": m.params,
            "metrics": m.metrics,
            "artifact_path": m.artifact_path,
        }
        for m in models
    ]


# Status --------------------------------------------------------------------------------------


def status_from_database(
    database: Database, configured: Sequence[SeriesKey] = (), *, now: datetime | None = None
) -> dict[str, Any]:
    """The status document as far as the database knows it (no feed state, no schedule).

    Keys: see README "barcast status". The running daemon overlays its live view with
    `merge_status`.
    """
    now = now or datetime.now(UTC)
    stats = {s.series: s for s in db_bars.series_stats(database)}
    leases = cluster.series_leases(database)
    rows = []
    for key in known_series(database, configured):
        st = stats.get(key)
        bar_end = st.last + key.step if st else None
        champ = registry.champion(database, key)
        since = registry.champion_since(database, key) if champ else None
        last = db_forecasts.latest_forecast(database, key)
        rows.append(
            {
                "series": str(key),
                "configured": key in configured,
                "bars": st.bars if st else 0,
                "first_bar": iso(st.first) if st else None,
                "last_bar": iso(st.last) if st else None,
                "last_bar_age_s": round((now - bar_end).total_seconds(), 3) if bar_end else None,
                "champion": champ.id if champ else None,
                "champion_arch": champ.arch if champ else None,
                "champion_since": iso(since),
                "champion_age_s": round((now - champ.created_at).total_seconds(), 3) if champ else None,
                "last_forecast": iso(last.issued_at) if last else None,
                "last_forecast_model": last.model_id if last else None,
                "feed": None,
                **_lease(leases.get(key), now),
            }
        )
    return {
        "source": "database",
        "generated_at": iso(now),
        "database": {"url": database.display_url, "size_bytes": database_size_bytes(database)},
        "series": rows,
        "feeds": {},
        "next_retrain": None,
    }


def _lease(lease: cluster.SeriesLease | None, now: datetime) -> dict[str, Any]:
    """Owner (None when released or expired), lease expiry and fencing token of one series."""
    if lease is None:
        return {"owner": None, "lease_expires": None, "token": None}
    return {"owner": lease.owner if lease.live(now) else None, "lease_expires": iso(lease.expires_at),
            "token": lease.token}


def merge_status(base: dict[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay the daemon's live status on the database's: live values win, series merge by name."""
    out = {**base, **{k: v for k, v in live.items() if k != "series"}, "source": "daemon"}
    by_name = {row["series"]: dict(row) for row in base.get("series", [])}
    for row in live.get("series", []) or []:
        name = str(row.get("series"))
        by_name[name] = {**by_name.get(name, {"series": name}), **row}
    out["series"] = list(by_name.values())
    return out
