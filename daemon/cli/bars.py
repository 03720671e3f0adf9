"""`barcast import-bars` and `barcast bars`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from daemon.cli.common import AppContext, emit_rows, format_option, parse_time, pass_app
from db.bars import read_bars, upsert_bars
from db.csvbars import read_bars_csv, write_bars_csv
from db.errors import InputError
from db.records import INTERVALS, SeriesKey
from db.resample import resample

_INTERVAL = click.Choice(list(INTERVALS))


@click.command("import-bars")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--exchange", required=True, help="Exchange name, e.g. binance.")
@click.option("--symbol", required=True, help="Normalised symbol BASE-QUOTE, e.g. BTC-USDT.")
@click.option("--interval", type=_INTERVAL, default="5m", show_default=True, help="Interval of the file's bars.")
@click.option("--resample", "resample_to", type=_INTERVAL, default=None,
              help="Also roll the bars up to this interval (e.g. 1m file -> 5m bars).")
@pass_app
def import_bars(app: AppContext, file: Path, exchange: str, symbol: str, interval: str,
                resample_to: str | None) -> None:
    """Load an OHLCV CSV (timestamp,open,high,low,close,volume) into the database.

    The whole file is checked first; a bad row stops the import naming its line, and nothing
    from the file is stored.
    """
    series = SeriesKey(exchange.lower(), symbol.upper(), interval)
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    size = file.stat().st_size
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), console=app.console, transient=True,
                  disable=not app.console.is_terminal) as progress:
        task = progress.add_task(f"checking {file.name}", total=size)
        approx_line = max(1, size // max(1, sum(1 for _ in file.open("rb"))))

        def on_line(n: int) -> None:
            if n % 5000 == 0:
                progress.update(task, completed=min(size, n * approx_line))

        bars = read_bars_csv(file, exchange=series.exchange, symbol=series.symbol, interval=interval,
                             on_line=on_line)
        progress.update(task, completed=size, description=f"storing {len(bars):,} bars")
        database = app.database()
        extra = []
        incomplete = 0
        if resample_to:
            result = resample(bars, resample_to)
            extra, incomplete = result.bars, result.incomplete
        written = upsert_bars(database, [*bars, *extra])
    msg = f"{file}: {len(bars):,} {interval} bars for {series.exchange}:{series.symbol}"
    if resample_to:
        msg += f", {len(extra):,} {resample_to} bars rolled up ({incomplete} incomplete buckets at gaps skipped)"
    click.echo(f"{msg}; {written:,} rows inserted or changed")


@click.command("bars")
@click.option("--exchange", required=True)
@click.option("--symbol", required=True)
@click.option("--interval", type=_INTERVAL, default="5m", show_default=True)
@click.option("--since", default=None, help="From this bar open time (ISO-8601 UTC, Unix seconds, or an age like 3d).")
@click.option("--until", default=None, help="Before this bar open time (exclusive).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many (the newest).")
@format_option()
@pass_app
def bars_cmd(app: AppContext, exchange: str, symbol: str, interval: str, since: str | None, until: str | None,
             limit: int | None, fmt: str) -> None:
    """Stored bars of one series, oldest first. `--format csv` is the import format."""
    series = SeriesKey(exchange.lower(), symbol.upper(), interval)
    rows = read_bars(app.database(), series, since=parse_time(since, "--since"), until=parse_time(until, "--until"),
                     limit=limit, newest_first=limit is not None)
    if limit is not None:
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


commands = [import_bars, bars_cmd]
