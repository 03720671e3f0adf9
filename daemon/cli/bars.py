"""`barcast import-bars`, `barcast bars` and `barcast gaps`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from daemon.cli.common import (
    AppContext,
    SeriesParam,
    emit_rows,
    flat_series,
    format_option,
    parse_range,
    pass_app,
    progress_bar,
    require_known_series,
    series_option,
)
from db.bars import read_bars, upsert_bars
from db.csvbars import read_bars_csv, write_bars_csv
from db.errors import InputError
from db.gaps import list_gaps
from db.records import DEFAULT_INTERVAL, INTERVALS, SeriesKey
from db.resample import resample

_INTERVAL = click.Choice(list(INTERVALS))


def _series_options(fn: Any) -> Any:
    for opt in reversed([
        series_option("The series, e.g. binance:BTC-USDT or binance:BTC-USDT:1m."),
        click.option("--exchange", metavar="E", help="Alias: with --symbol, the same as --series E:S."),
        click.option("--symbol", metavar="S", help="Alias: with --exchange, the same as --series E:S."),
        click.option("--interval", type=_INTERVAL, default=None,
                     help="Bar interval when --series has none [5m]."),
    ]):
        fn = opt(fn)
    return fn


def _one_series(series: SeriesKey | None, exchange: str | None, symbol: str | None, interval: str | None
                ) -> SeriesKey:
    """--series E:S[:I], or its documented alias --exchange E --symbol S (checked the same way)."""
    if series is not None and (exchange or symbol):
        raise InputError("give --series E:S[:I], or its alias --exchange E --symbol S, not both")
    if series is None:
        if not (exchange and symbol):
            raise click.UsageError("give --series EXCHANGE:SYMBOL[:INTERVAL] (e.g. binance:BTC-USDT)")
        series = SeriesParam().convert(f"{exchange}:{symbol}", None, None)
        series = SeriesKey(series.exchange, series.symbol, interval or series.interval)
    elif interval and interval != series.interval:
        if series.interval != DEFAULT_INTERVAL:
            raise InputError(f"--interval {interval} contradicts --series {series}")
        series = SeriesKey(series.exchange, series.symbol, interval)
    return series


@click.command("import-bars")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_series_options
@click.option("--resample", "resample_to", type=_INTERVAL, default=None,
              help="Also roll the bars up to this interval (e.g. 1m file -> 5m bars).")
@pass_app
def import_bars(app: AppContext, file: Path, series: SeriesKey | None, exchange: str | None, symbol: str | None,
                interval: str | None, resample_to: str | None) -> None:
    """Load an OHLCV CSV (timestamp,open,high,low,close,volume) into the database.

    The whole file is checked first; a bad row stops the import naming its line, and nothing
    from the file is stored.
    """
    series = _one_series(series, exchange, symbol, interval)
    interval = series.interval
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    size = file.stat().st_size
    with progress_bar(app.console) as progress:
        task = progress.add_task(f"checking {file.name}", total=size)
        approx_line = max(1, size // max(1, sum(1 for _ in file.open("rb"))))

        def on_line(n: int) -> None:
            if n % 5000 == 0:
                progress.update(task, completed=min(size, n * approx_line))

        bars = read_bars_csv(file, exchange=series.exchange, symbol=series.symbol, interval=interval,
                             on_line=on_line)
        extra = []
        incomplete = 0
        if resample_to:  # before the database is opened: a bad --resample must create nothing
            result = resample(bars, resample_to)
            extra, incomplete = result.bars, result.incomplete
        progress.update(task, completed=size, description=f"storing {len(bars) + len(extra):,} bars")
        written = upsert_bars(app.database(create=True), [*bars, *extra])
    msg = f"{file}: {len(bars):,} {interval} bars for {series.exchange}:{series.symbol}"
    if resample_to:
        msg += f", {len(extra):,} {resample_to} bars rolled up ({incomplete} incomplete buckets at gaps skipped)"
    click.echo(f"{msg}; {written:,} rows inserted or changed")


@click.command("bars")
@_series_options
@click.option("--since", default=None, help="From this bar open time (ISO-8601 UTC, Unix seconds, or an age like 3d).")
@click.option("--until", default=None, help="Before this bar open time (exclusive).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many: the newest, or with --since the first from it (as the API's /bars).")
@format_option()
@pass_app
def bars_cmd(app: AppContext, series: SeriesKey | None, exchange: str | None, symbol: str | None,
             interval: str | None, since: str | None, until: str | None, limit: int | None, fmt: str) -> None:
    """Stored bars of one series, oldest first. `--format csv` is the import format."""
    series = _one_series(series, exchange, symbol, interval)
    t0, t1 = parse_range(since, until)
    require_known_series(app, [series])
    # a page from --since reads forward from it; without it the newest are what one asks for
    newest = limit is not None and t0 is None
    rows = read_bars(app.database(), series, since=t0, until=t1, limit=limit, newest_first=newest)
    if newest:
        rows.reverse()
    if fmt == "csv":
        write_bars_csv(rows, sys.stdout)
        return
    emit_rows(
        [
            {"open_time": b.open_time, "open": b.open, "high": b.high, "low": b.low, "close": b.close,
             "volume": b.volume, "trade_count": b.trade_count, "source": b.source}
            for b in rows
        ],
        ["open_time", "open", "high", "low", "close", "volume", "trade_count", "source"],
        fmt,
        title=str(series),
    )


@click.command("gaps")
@series_option("Only these series (default: all).", many=True)
@click.option("--unfilled", is_flag=True, help="Only gaps no backfill has filled yet.")
@click.option("--last", "last", type=click.IntRange(min=1), metavar="N", help="The newest N gaps (default: all).")
@format_option()
@pass_app
def gaps_cmd(app: AppContext, series: tuple[list[SeriesKey], ...], unfilled: bool, last: int | None, fmt: str) -> None:
    """Ranges of bars a feed missed across a reconnect or restart, newest first: when, how many
    bars, and how many the REST backfill stored (fewer where the exchange had no candles; empty
    until filled)."""
    keys = flat_series(series)
    require_known_series(app, keys)
    gaps = list_gaps(app.database(), keys, unfilled=unfilled, limit=last)
    if not gaps and fmt == "table":
        app.console.print("no feed gaps recorded for that selection")
        return
    from daemon.ops.reports import GAP_COLUMNS, gap_doc

    emit_rows(
        [dict(gap_doc(g)) for g in gaps],
        GAP_COLUMNS,
        fmt,
        title="feed gaps, newest first ([gap_start, gap_end): bars the live stream missed)",
    )


commands = [import_bars, bars_cmd, gaps_cmd]
