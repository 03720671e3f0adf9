"""PNG charts for operators: a series' prices with its forecasts, and live error by horizon.

matplotlib with the Agg backend (no display needed; safe under systemd). Times are drawn in UTC.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from daemon.ops import reports
from db import bars as db_bars
from db import forecasts as db_forecasts
from db import registry, scores
from db.engine import Database
from db.errors import InputError
from db.records import SeriesKey
from trainer.quantiles import level_name
from trainer.retrain_job import BASELINE_ID

PAST_STEPS = (1, 16)


@dataclass(frozen=True, slots=True)
class PlotSummary:
    path: Path
    bars: int
    forecasts: int
    latest: str | None
    #: What the latest forecasts' bands show, per model ("q10–q90 fan", "± live MAE per step").
    bands: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded band around a forecast: per step low and high, its legend text, and how dark."""

    low: list[float]
    high: list[float]
    label: str
    alpha: float = 0.18


def _quote(series: SeriesKey) -> str:
    return series.symbol.split("-")[-1]


def _utc_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("time (UTC)")


def _save(fig: Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)


def price_plot(
    database: Database, series: SeriesKey, *, since: datetime, out: Path, model_id: str | None = None
) -> PlotSummary:
    """Closes since `since`, past step-1/16 forecasts at their target times, and the latest fan."""
    frame = db_bars.bars_frame(database, series, since=since)
    if frame.empty:
        raise InputError(f"no bars of {series} since {reports.iso(since)}: nothing to plot")
    past = db_forecasts.query_forecasts(database, series, since=since, model_id=model_id, limit=5000)
    latest = past[0] if past else db_forecasts.latest_forecast(database, series, model_id)
    latest_set = [f for f in past if latest and f.issued_at == latest.issued_at] or ([latest] if latest else [])
    quote = _quote(series)

    fig, ax = plt.subplots(figsize=(12, 6), layout="constrained")
    ax.plot(frame.index, frame["close"], color="black", linewidth=1.1, label="realised close")

    # Past forecasts of one model only (the champion where it has some), or the lines interleave.
    champ = registry.champion(database, series)
    shown = model_id or (champ.id if champ and any(f.model_id == champ.id for f in past) else None)
    shown = shown or (past[0].model_id if past else None)
    for step, colour in zip(PAST_STEPS, ("tab:blue", "tab:orange"), strict=True):
        pts = sorted(
            (f.target_times[step - 1], f.closes[step - 1])
            for f in past
            if f.model_id == shown and len(f.closes) >= step
        )
        if pts:
            minutes = step * int(series.step.total_seconds()) // 60
            ax.plot(mdates.date2num([p[0] for p in pts]), [p[1] for p in pts], color=colour, linewidth=0.8,
                    alpha=0.75, marker=".", markersize=2, label=f"{shown}: past forecasts {minutes} min ahead")

    drawn: list[str] = []
    median_named = False  # one legend entry for the medians: dashed, each in its model's colour
    for f, colour in zip(latest_set, ("tab:red", "tab:purple", "tab:green", "tab:brown"), strict=False):
        anchor_t, anchor_c = f.issued_at, float(f.last_close) if f.last_close is not None else f.closes[0]
        xs = mdates.date2num([anchor_t, *f.target_times])
        ys = [anchor_c, *f.closes]
        ax.plot(xs, ys, color=colour, linewidth=2,
                label=f"latest forecast ({f.model_id}, issued {reports.iso(f.issued_at)})")
        bands = bands_of(database, series, f)
        for band in bands:
            ax.fill_between(xs, [anchor_c, *band.low], [anchor_c, *band.high], color=colour, alpha=band.alpha,
                            linewidth=0, label=band.label)
        median = median_of(f)
        if median is not None:
            ax.plot(xs, [anchor_c, *median], color=colour, linewidth=1, linestyle="--",
                    label=None if median_named else "median (q50), dashed in each model's colour")
            median_named = True
        if bands:
            drawn.append(f"{f.model_id}: {bands[0].label}")
    ax.axvline(frame.index[-1], color="grey", linestyle=":", linewidth=1)

    _utc_axis(ax)
    ax.set_ylabel(f"price ({quote})")
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    first, last = frame.index[0], frame.index[-1]
    ax.set_title(
        f"{series}: close prices {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC "
        f"({len(frame)} bars) with forecasts"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, out)
    return PlotSummary(out, len(frame), len(past), reports.iso(latest.issued_at) if latest else None, tuple(drawn))


def _horizon_axis(
    ax: Any, ylabel: str, title: str, *, zero: bool = False, percent: bool = False, legend: bool = False
) -> None:
    """A by-horizon panel of the accuracy plot; `zero`: a percent axis with its zero line."""
    if zero:
        ax.axhline(0, color="black", linewidth=0.8)
    if zero or percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=None))
    ax.set_xlabel("horizon (minutes ahead)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def bands_of(database: Database, series: SeriesKey, f: Any) -> list[Band]:
    """The fan a forecast was served with: one band per pair of levels around the median, the
    outermost (e.g. q10–q90) lightest. A point-only forecast (stored before quantiles) shows
    its interval if it has one, else ± the model's live MAE per step (from online scores)."""
    if f.quantiles is not None and f.levels is not None and len(f.levels) >= 2:
        levels = list(f.levels)
        pairs = [(i, len(levels) - 1 - i) for i in range(len(levels) // 2)]
        return [
            Band([q[lo] for q in f.quantiles], [q[hi] for q in f.quantiles],
                 f"{level_name(levels[lo])}–{level_name(levels[hi])} fan", 0.15 + 0.1 * depth)
            for depth, (lo, hi) in enumerate(pairs)
        ]
    if f.lower is not None and f.upper is not None:
        return [Band(list(f.lower), list(f.upper), "forecast interval")]
    mae = {a.step: a.mae for a in scores.accuracy(database, series=series, model_id=f.model_id)}
    if len(mae) < len(f.closes):
        return []
    lo = [c - mae[i + 1] for i, c in enumerate(f.closes)]
    hi = [c + mae[i + 1] for i, c in enumerate(f.closes)]
    return [Band(lo, hi, "± live MAE per step")]


def median_of(f: Any) -> list[float] | None:
    """The served median per step, where the forecast has the 0.5 level."""
    if f.quantiles is None or f.levels is None or 0.5 not in f.levels:
        return None
    at = list(f.levels).index(0.5)
    return [q[at] for q in f.quantiles]


def accuracy_plot(
    database: Database, *, out: Path, series: SeriesKey | None = None, model_id: str | None = None,
    since: datetime | None = None,
) -> PlotSummary:
    """Live MAE by horizon per (series, model) beside persistence's on the same bars, and skill;
    for served fans also the central interval's coverage beside its nominal value, and the
    probabilistic skill against climatology (what a fan adds where the point cannot)."""
    docs = reports.accuracy_docs(database, series=series, model_id=model_id, since=since)
    if not docs:
        raise InputError("no scored forecasts for that selection: nothing to plot (see `barcast accuracy`)")
    groups: dict[tuple[str, str], list[reports.AccuracyDoc]] = defaultdict(list)
    for d in docs:
        groups[(d["series"], d["model_id"])].append(d)
    quotes = {SeriesKey.parse(s).symbol.split("-")[-1] for s, _ in groups}
    unit = quotes.pop() if len(quotes) == 1 else "quote currency"

    fans = any(d["n_quantile"] for d in docs)
    fig, axes = plt.subplots(2 if fans else 1, 2, figsize=(13, 10 if fans else 5.5), layout="constrained",
                             width_ratios=(3, 2), squeeze=False)
    (ax, ax2), probabilistic = axes[0], (axes[1] if fans else None)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_total = 0
    nominal: set[float] = set()
    for i, ((s, m), rows) in enumerate(sorted(groups.items())):
        c = colours[i % len(colours)]
        rows.sort(key=lambda d: d["step"])
        x = [d["horizon_minutes"] for d in rows]
        n_total += sum(d["n"] for d in rows)
        n = max(d["n"] for d in rows)
        ax.plot(x, [d["mae"] for d in rows], color=c, marker="o", label=f"{m} on {s} ({n} forecasts)")
        if m != BASELINE_ID:  # persistence's own line is its reference
            ax.plot(x, [d["persistence_mae"] for d in rows], color=c, linestyle="--", alpha=0.8,
                    label=f"persistence on the same bars ({s})")
        ax2.plot(x, [100 * (d["skill"] or 0.0) for d in rows], color=c, marker="o", label=f"{m} on {s}")
        if probabilistic is not None:
            fan = [d for d in rows if d["n_quantile"]]
            nominal.update(d["nominal_coverage"] for d in fan if d["nominal_coverage"] is not None)
            series_of = ([(d["horizon_minutes"], d["coverage"]) for d in fan],
                         [(d["horizon_minutes"], d["prob_skill"]) for d in fan])
            for panel, values in zip(probabilistic, series_of, strict=True):
                pts = [(h, v) for h, v in values if v is not None]
                if pts:
                    panel.plot([h for h, _ in pts], [100 * v for _, v in pts], color=c, marker="o",
                               label=f"{m} on {s}")
    _horizon_axis(ax, f"mean absolute error ({unit})", "Live forecast error by horizon vs persistence", legend=True)
    _horizon_axis(ax2, "skill vs persistence (above 0 % is better)", "Skill: 1 - MAE / persistence MAE", zero=True)
    if probabilistic is not None:
        cov, psk = probabilistic
        for level in sorted(nominal):
            cov.axhline(100 * level, color="black", linestyle="--", linewidth=0.8, label=f"nominal {level:.0%}")
        _horizon_axis(cov, "outcomes inside the central interval (%)",
                      "Live coverage of the served fan (closer to nominal is better)", percent=True, legend=True)
        _horizon_axis(psk, "pinball skill vs climatology (above 0 % is better)",
                      "Probabilistic skill: 1 - pinball / pinball(climatology)", zero=True)
    window = f"since {reports.iso(since)}" if since else "all scored forecasts"
    fig.suptitle(f"barcast accuracy, {window} ({n_total} scored steps)", fontsize=11)
    _save(fig, out)
    return PlotSummary(out, 0, len(groups), None)
