"""Operator commands: `barcast forecasts`, `accuracy`, `status`, `tail`, `plot`.

JSON output is the documents of daemon/ops/reports.py (the HTTP API returns the same objects), so a
key means one thing everywhere; the README lists them.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson

from daemon.cli.common import (
    AppContext,
    emit_rows,
    flat_series,
    format_option,
    parse_duration,
    parse_time,
    pass_app,
    require_known_series,
    require_model,
    series_option,
)
from daemon.ops import reports
from db.errors import BarcastError, InputError
from db.records import SeriesKey
from trainer.quantiles import level_name

DEFAULT_LAST = 20
CSV_FORECAST_COLUMNS = [
    "series", "issued_at", "model_id", "step", "target_time", "predicted", "actual", "error",
    "last_close", "latency_ms", "created_at",
]
TABLE_STEPS = (1, 4, 8, 16)
#: Steps whose central interval (lowest..highest quantile) the forecasts table shows.
BAND_STEPS = (1, 16)
#: `--series` not given: one query over every series.
ALL: list[SeriesKey | None] = [None]


def _dump_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


# forecasts -----------------------------------------------------------------------------------


def _band_name(d: reports.ForecastDoc, k: int) -> str:
    levels = d["levels"] or [0.1, 0.9]
    return f"+{k} {level_name(levels[0])}..{level_name(levels[-1])}"


def _forecast_table_row(d: reports.ForecastDoc, band_columns: dict[int, str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "issued_at": d["issued_at"], "series": d["series"], "model": d["model_id"], "last_close": d["last_close"],
    }
    for k in TABLE_STEPS:
        if k <= len(d["closes"]):
            row[f"+{k}"] = f"{d['closes'][k - 1]:.2f}"
    q = d["quantiles"]
    for k, name in band_columns.items():
        if q is not None and k <= len(q):
            row[name] = f"{q[k - 1][0]:.2f}..{q[k - 1][-1]:.2f}"
    row["realised"] = f"{d['realised']}/{len(d['closes'])}"
    row["mae"] = None if d["mae"] is None else f"{d['mae']:.2f}"
    return row


def _csv_rows(docs: list[reports.ForecastDoc]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per forecast step; a column per quantile level any forecast has (q10, q50, …),
    empty for point-only forecasts and for levels a forecast does not have."""
    levels = sorted({lv for d in docs for lv in d["levels"] or ()})
    rows = []
    for d in docs:
        at = {lv: j for j, lv in enumerate(d["levels"] or ())}
        for i in range(len(d["closes"])):
            row: dict[str, Any] = {
                "series": d["series"], "issued_at": d["issued_at"], "model_id": d["model_id"], "step": i + 1,
                "target_time": d["targets"][i], "predicted": repr(d["closes"][i]), "actual": d["actuals"][i],
                "error": None if d["errors"][i] is None else repr(d["errors"][i]), "last_close": d["last_close"],
                "latency_ms": d["latency_ms"], "created_at": d["created_at"],
            }
            q = d["quantiles"]
            for lv in levels:
                row[level_name(lv)] = repr(q[i][at[lv]]) if q is not None and lv in at else None
            rows.append(row)
    cols = CSV_FORECAST_COLUMNS[:6] + [level_name(lv) for lv in levels] + CSV_FORECAST_COLUMNS[6:]
    return rows, cols


def _emit_forecasts(docs: list[reports.ForecastDoc], fmt: str) -> None:
    if fmt == "json":
        _dump_json(docs)
    elif fmt == "csv":
        rows, cols = _csv_rows(docs)
        emit_rows(rows, cols, "csv")
    else:
        with_q = next((d for d in docs if d["quantiles"] is not None), None)
        band_columns = {k: _band_name(with_q, k) for k in BAND_STEPS} if with_q else {}
        columns = ["issued_at", "series", "model", "last_close", *(f"+{k}" for k in TABLE_STEPS),
                   *band_columns.values(), "realised", "mae"]
        emit_rows([_forecast_table_row(d, band_columns) for d in docs], columns, "table",
                  title="forecasts, newest first (+k: predicted close k bars ahead; +k qLO..qHI: its central "
                        "interval; mae over the realised steps)")


@click.command("forecasts")
@series_option("Only these series (default: all).", many=True)
@click.option("--last", "last", type=click.IntRange(min=1), metavar="N",
              help=f"The newest N forecasts (default {DEFAULT_LAST} without --since).")
@click.option("--since", metavar="T", help="Issued at or after T (ISO-8601, Unix seconds, or an age like 3d).")
@click.option("--until", metavar="T", help="Issued before T.")
@click.option("--model", "model_id", metavar="ID", help="Only this model's forecasts.")
@click.option("--latest", is_flag=True, help="Only the newest forecast of each series.")
@format_option()
@pass_app
def forecasts_cmd(app: AppContext, series: tuple[list[SeriesKey], ...], last: int | None, since: str | None,
                  until: str | None, model_id: str | None, latest: bool, fmt: str) -> None:
    """Stored forecasts, newest first, with realised closes and errors where the targets have closed."""
    keys = flat_series(series)
    t0, t1 = parse_time(since, "--since"), parse_time(until, "--until")
    if t0 is not None and t1 is not None and t0 >= t1:
        raise InputError("--since must be before --until")
    require_known_series(app, keys)
    require_model(app, model_id)
    database = app.database()
    if latest:
        if last or since or until:
            raise InputError("--latest takes no --last, --since or --until")
        docs = reports.latest_docs(database, keys or reports.known_series(database, app.config.series_keys),
                                   model_id=model_id)
    else:
        limit = last if last is not None else (None if t0 is not None else DEFAULT_LAST)
        docs = [d for k in (keys or ALL) for d in reports.forecast_docs(
            database, k, since=t0, until=t1, model_id=model_id, limit=limit)]
        if len(keys) > 1:
            docs.sort(key=lambda d: (d["issued_at"], d["series"]), reverse=True)
            docs = docs[:limit] if limit is not None else docs
    if not docs and fmt == "table":
        app.console.print("no forecasts stored for that selection")
    _emit_forecasts(docs, fmt)


# accuracy ------------------------------------------------------------------------------------


def _window(app: AppContext, text: str, series: SeriesKey | None, model_id: str | None) -> datetime | None:
    span = reports.parse_window(text, "--window")
    return reports.window_since(app.database(), span, series=series, model_id=model_id)


ACCURACY_COLUMNS = [
    "series", "model_id", "step", "horizon_minutes", "n", "mae", "persistence_mae", "skill",
    "n_quantile", "pinball_mean", "wis", "coverage", "nominal_coverage", "width", "prob_skill",
]


def _accuracy_columns(docs: list[reports.AccuracyDoc]) -> list[str]:
    """The fixed columns plus one pinball column per level seen (pinball_q10, …)."""
    names = sorted({k for d in docs for k in d["pinball"] or {}}, key=lambda n: float(n[1:]))
    return [*ACCURACY_COLUMNS[:9], *(f"pinball_{n}" for n in names), *ACCURACY_COLUMNS[9:]]


def _accuracy_row(d: reports.AccuracyDoc) -> dict[str, Any]:
    row: dict[str, Any] = {k: v for k, v in d.items() if k != "pinball"}
    for name, v in (d["pinball"] or {}).items():
        row[f"pinball_{name}"] = v
    return row


@click.command("accuracy")
@series_option("Only these series (default: all).", many=True)
@click.option("--model", "model_id", metavar="ID", help="One model (default: all).")
@click.option("--window", default="7d", show_default=True, metavar="SPAN",
              help="Scores of target bars in the last SPAN (30m, 12h, 7d…) or 'all'.")
@format_option()
@pass_app
def accuracy_cmd(app: AppContext, series: tuple[list[SeriesKey], ...], model_id: str | None, window: str,
                 fmt: str) -> None:
    """Live MAE per step against persistence on the same bars, and the quantile scores (pinball
    per level, WIS, central-interval coverage and width, probabilistic skill against climatology),
    from the online scores."""
    keys = flat_series(series)
    require_known_series(app, keys)
    require_model(app, model_id)
    docs = [
        d for k in (keys or ALL)
        for d in reports.accuracy_docs(app.database(), series=k, model_id=model_id,
                                       since=_window(app, window, k, model_id))
    ]
    if fmt == "json":
        _dump_json(docs)
        return
    columns = _accuracy_columns(docs)
    if fmt == "table":
        if not docs:
            app.console.print(f"no scored forecasts in the window ({window})")

        def num(v: Any, spec: str = ".4f") -> str | None:
            return None if v is None else format(v, spec)

        rows = []
        for d in docs:
            row = {k: (num(v) if k.startswith(("pinball", "wis", "width")) else v)
                   for k, v in _accuracy_row(d).items()}
            row.update(mae=num(d["mae"]), persistence_mae=num(d["persistence_mae"]),
                       skill=None if d["skill"] is None else f"{100 * d['skill']:+.1f}%",
                       prob_skill=None if d["prob_skill"] is None else f"{100 * d['prob_skill']:+.1f}%",
                       coverage=num(d["coverage"], ".3f"), nominal_coverage=num(d["nominal_coverage"], ".2f"))
            rows.append(row)
        emit_rows(rows, columns, "table",
                  title=f"live accuracy, window {window} (skill > 0 beats persistence; coverage of the central "
                        "interval beside its nominal value; prob_skill > 0 beats climatology's fan)")
        return
    emit_rows([_accuracy_row(d) for d in docs], columns, "csv")


# status --------------------------------------------------------------------------------------


def _daemon_status(app: AppContext, timeout: float, api: str | None) -> dict[str, Any] | None:
    """The running daemon's /status, or None when no daemon answers at `api` (default: the config's)."""
    from daemon.ops.client import api_base, daemon_status

    cfg = app.config.api
    base = api_base(cfg, api)
    if base is None:
        return None
    doc, why = daemon_status(base, token=cfg.token, timeout=timeout, quiet_unreachable=api is None)
    if why:
        app.console.print(f"[yellow]{why}; reading the database[/]")
    return doc


STATUS_COLUMNS = ["series", "last_bar", "last_bar_age_s", "feed", "champion", "champion_age_s", "last_forecast",
                  "owner", "lease_expires", "token"]


def _age(seconds: Any) -> str | None:
    """An age for people; a negative one (a bar ending after this machine's now: a skewed clock,
    or the demo's sped-up exchange) reads as how far ahead it is."""
    if seconds is None:
        return None
    s = float(seconds)
    if s < 0:
        return f"{_age(-s)} ahead"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


@click.command("status")
@click.option("--offline", is_flag=True, help="Read the database only; do not ask a running daemon.")
@click.option("--api", metavar="URL", help="The daemon's HTTP API (default: api.host:api.port from the config).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds to wait for the daemon's answer.")
@format_option()
@pass_app
def status_cmd(app: AppContext, offline: bool, api: str | None, timeout: float, fmt: str) -> None:
    """Per series last bar and age, feed state, champion and age, next retrain, database size,
    retention and whether the daemon is catching up."""
    doc = None if offline else _daemon_status(app, timeout, api)
    if doc is None:
        doc = reports.status_from_database(app.database(), app.config.series_keys)
    if fmt == "json":
        _dump_json(doc)
        return
    rows = [dict(r) for r in doc.get("series", [])]
    for r in rows:
        feed = r.get("feed")
        if isinstance(feed, dict):
            r["feed"] = " ".join(f"{k}={v}" for k, v in feed.items())
    if fmt == "csv":
        emit_rows(rows, STATUS_COLUMNS, "csv")
        return
    for r in rows:
        r["last_bar_age_s"] = _age(r.get("last_bar_age_s"))
        r["champion_age_s"] = _age(r.get("champion_age_s"))
    db = doc.get("database") or {}
    size = db.get("size_bytes")
    title = f"barcast status from the {doc.get('source', '?')} at {doc.get('generated_at', '?')}"
    emit_rows(rows, STATUS_COLUMNS, "table", title=title)
    feeds = doc.get("feeds") or {}
    if feeds:
        keys = sorted({k for v in feeds.values() if isinstance(v, dict) for k in v})
        rows = [{"exchange": ex, **(v if isinstance(v, dict) else {})} for ex, v in sorted(feeds.items())]
        for r in rows:  # per-reason or per-series maps: "key=value" pairs, as a series' feed above
            r.update({k: "; ".join(f"{a}={b}" for a, b in v.items()) for k, v in r.items() if isinstance(v, dict)})
        emit_rows(rows, ["exchange", *keys], "table", title="feeds")
    size_text = f"{size / 1e6:.1f} MB" if isinstance(size, int | float) else "unknown"
    click.echo(f"database: {db.get('url', '?')} ({size_text})")
    unknown = "none scheduled" if doc.get("source") == "daemon" else "unknown (no daemon answered)"
    click.echo(f"next retrain: {doc.get('next_retrain') or unknown}")
    click.echo(f"retention: {_retention_line(app, doc.get('retention'))}")
    if isinstance(doc.get("catch_up"), dict):
        click.echo(f"catch-up: {_catch_up_line(doc['catch_up'])}")


def _catch_up_line(c: dict[str, Any]) -> str:
    """The daemon's catch-up for people: the one in progress, else the last one (README "Metrics")."""
    cur, last = c.get("current"), c.get("last")
    if isinstance(cur, dict):
        return (f"catching up since {cur.get('since')}: {cur.get('bars')} bars behind, "
                f"{cur.get('forecasts')} forecasts stored so far")
    if isinstance(last, dict):
        return (f"caught up (the last: {last.get('bars')} bars, {last.get('forecasts')} forecasts in "
                f"{last.get('seconds')} s, ended {last.get('ended_at')})")
    return "none since the daemon started"


def _retention_line(app: AppContext, live: Any) -> str:
    """Retention for people: the daemon's (with its next and last prune) or, without one, the
    config's; says so when nothing prunes the database."""
    r = live if isinstance(live, dict) else None
    cfg = app.config.retention
    days = r or {"enabled": cfg.enabled, "forecasts_days": cfg.forecasts_days, "jobs_days": cfg.jobs_days,
                 "models_days": cfg.models_days, "gaps_days": cfg.gaps_days}
    kept = ", ".join(f"{what} {float(days[k]):g} d" if days.get(k) else f"{what} kept for good"
                     for what, k in (("forecasts", "forecasts_days"), ("jobs", "jobs_days"),
                                     ("models", "models_days"), ("gaps", "gaps_days")))
    if not days.get("enabled"):
        return f"off: the daemon does not prune, the database grows until `barcast db prune` ({kept})"
    if r is None:
        return f"{kept} (the config's; no daemon answered)"
    last = r.get("last_prune")
    done = f"; last prune {last.get('at')}: {last.get('total')} rows" if isinstance(last, dict) else ""
    return f"{kept}; next prune {r.get('next_prune') or 'none scheduled'}{done}"


# tail ----------------------------------------------------------------------------------------


@click.command("tail")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new forecasts (across log rotation) until Ctrl-C.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=10, show_default=True,
              help="Recent forecasts to print first.")
@series_option("Only these series.", many=True)
@format_option("pretty", ("pretty", "json"))
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Forecast log to read (default: the config's forecast log).")
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.25, show_default=True, hidden=True)
@pass_app
def tail_cmd(app: AppContext, follow: bool, lines: int, series: tuple[list[SeriesKey], ...], fmt: str,
             path: Path | None, interval: float) -> None:
    """Recent forecast log lines; with -f, follow new ones like `tail -F`."""
    from daemon.ops import tail

    keys = flat_series(series)
    log_path = path or app.config.forecast_log
    if not follow and not log_path.exists():
        raise BarcastError(f"no forecast log at {log_path} (is `barcast run` running? see --file)")

    def selected(raw: bytes) -> dict[str, Any] | None:
        obj = tail.parse(raw)
        return obj if obj is not None and (not keys or any(tail.matches(obj, k) for k in keys)) else None

    def emit(raw: bytes) -> None:
        if (obj := selected(raw)) is not None:
            sys.stdout.write((raw.decode() if fmt == "json" else tail.pretty(obj)) + "\n")

    try:
        recent = tail.recent_lines(log_path, lines, lambda raw: selected(raw) is not None)
        follower = tail.Follower(log_path, from_end=True) if follow else None
        for raw in recent:
            emit(raw)
        sys.stdout.flush()
        if follower is None:
            return
        if not recent:
            app.console.print(f"waiting for forecasts in {log_path} … (Ctrl-C stops)")
        for raw in follower.follow(interval=interval):
            emit(raw)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `barcast tail | head`
        sys.stderr.close()


# plot ----------------------------------------------------------------------------------------


@click.group("plot", invoke_without_command=True)
@series_option("The series to draw (default: the first configured).")
@click.option("--last", "last", default="3d", show_default=True, metavar="SPAN", help="History to draw (12h, 3d…).")
@click.option("--model", "model_id", metavar="ID", help="Only this model's forecasts.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="PNG file to write.")
@click.pass_context
def plot_group(ctx: click.Context, series: SeriesKey | None, last: str, model_id: str | None,
               out: Path | None) -> None:
    """Price history with the latest forecast fan and past forecasts vs realised prices (PNG).

    `barcast plot accuracy --out FILE.png` draws error by horizon vs persistence instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise InputError("--out FILE.png is required")
    app: AppContext = ctx.ensure_object(AppContext)
    key = series or app.config.series_keys[0]
    require_known_series(app, [key])
    require_model(app, model_id)
    database = app.database()
    from db.bars import latest_bar

    newest = latest_bar(database, key)
    if newest is None:
        raise InputError(f"no bars stored for {key}: nothing to plot")
    # The span counts back from the newest stored bar, so a plot of imported history works too.
    end = newest.open_time + key.step
    since = reports.back_from(end, parse_duration(last, "--last"))
    from daemon.ops.plots import price_plot

    summary = price_plot(database, key, since=since, out=out, model_id=model_id)
    click.echo(f"wrote {summary.path} ({summary.bars} bars, {summary.forecasts} forecasts, "
               f"latest issued {summary.latest or 'never'})")
    for band in summary.bands:
        click.echo(f"  band {band}")


@plot_group.command("accuracy")
@series_option("One series (default: all).")
@click.option("--model", "model_id", metavar="ID", help="One model (default: all).")
@click.option("--window", default="7d", show_default=True, metavar="SPAN", help="30m, 12h, 7d… or 'all'.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png", required=True,
              help="PNG file to write.")
@pass_app
def plot_accuracy_cmd(app: AppContext, series: SeriesKey | None, model_id: str | None, window: str,
                      out: Path) -> None:
    """Live MAE by horizon for each model vs persistence on the same bars, and skill (PNG)."""
    from daemon.ops.plots import accuracy_plot

    require_known_series(app, [series] if series else [])
    require_model(app, model_id)
    summary = accuracy_plot(app.database(), out=out, series=series, model_id=model_id,
                            since=_window(app, window, series, model_id))
    click.echo(f"wrote {summary.path} ({summary.forecasts} series/model pairs)")


commands = [forecasts_cmd, accuracy_cmd, status_cmd, tail_cmd, plot_group]
