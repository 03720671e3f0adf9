"""Feed commands: `record`, `parse`, `exchange-sim`, `ingest`, `demo`."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import orjson

from daemon.bars import BarUpdate
from daemon.cli.common import (
    AppContext,
    existing_file,
    flat_series,
    format_option,
    iso,
    parse_duration,
    parse_time,
    pass_app,
    progress_bar,
    series_option,
)
from daemon.config import SeriesConfig
from daemon.feeds import PROTOCOLS
from daemon.feeds import protocol as get_protocol
from daemon.feeds.capture import read_capture
from daemon.feeds.randomwalk import random_walk_bars, walk_seed
from daemon.feeds.simulator import ExchangeSimulator, Faults, SimSeries
from daemon.ops.tail import pretty
from daemon.runner import (
    DEMO_API_PORT,
    DEMO_ARCH,
    DemoRun,
    DemoSettings,
    demo_daemon,
    ingest_daemon,
    record_daemon,
    run_until_signal,
    simulator_daemon,
)
from db.csvbars import read_bars_csv
from db.errors import InputError
from db.records import SeriesKey, decimal_text, floor_time, interval_seconds

_EXCHANGE = click.Choice(sorted(PROTOCOLS))


def _symbols(values: Iterable[str]) -> list[str]:
    out = [s.strip().upper() for v in values for s in v.replace(",", " ").split() if s.strip()]
    if not out:
        raise InputError("--symbols: give at least one symbol like BTC-USD")
    for s in out:
        SeriesKey("x", s)  # validates BASE-QUOTE
    return out


# --- record --------------------------------------------------------------------------------------


@click.command("record")
@click.option("--exchange", type=_EXCHANGE, required=True, help="Exchange protocol to speak.")
@click.option("--symbols", multiple=True, required=True, help="Symbols BASE-QUOTE (repeat or comma-separate).")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Capture file to append to (the ../shared/captures format).",
)
@click.option("--url", default=None, help="Websocket URL (default: the config's, else the exchange's).")
@click.option("--duration", default=None, help="Stop after this long (e.g. 90s, 10m); default: until Ctrl-C.")
@click.option("--max-messages", type=int, default=None, help="Stop after this many received messages.")
@pass_app
def record(
    app: AppContext,
    exchange: str,
    symbols: tuple[str, ...],
    out_path: Path,
    url: str | None,
    duration: str | None,
    max_messages: int | None,
) -> None:
    """Record raw websocket messages (`TIME: RAW` lines) for later `barcast parse` or tests."""
    proto = get_protocol(exchange)
    natives = [proto.native_symbol(s) for s in _symbols(symbols)]
    ws_url = url or app.config.exchange(exchange).ws_url or proto.ws_url
    limit_s = parse_duration(duration, "--duration").total_seconds() if duration else None
    async def main(stop: asyncio.Event) -> Counter[str]:
        return await record_daemon(proto, natives, app.config.feeds, ws_url, out_path, stop=stop,
                                   limit_s=limit_s, max_messages=max_messages)

    counts = run_until_signal(main)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    click.echo(f"recorded {counts['message']} messages to {out_path} ({summary})", err=True)


# --- parse ---------------------------------------------------------------------------------------

_TRADE_COLUMNS = ("exchange", "symbol", "trade_id", "time", "price", "size", "side")


@click.command("parse")
@click.argument("file", type=str)
@click.option("--exchange", type=_EXCHANGE, required=True, help="Whose protocol the messages speak.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Trade output: one JSON object per line, or CSV with a header.",
)
@click.option(
    "--summary",
    is_flag=True,
    help="Print only the counts and the parse rate (messages/s) on stdout, no trades.",
)
def parse(file: str, exchange: str, fmt: str, summary: bool) -> None:
    """Parse a capture (or JSON lines of raw messages) and print its normalised trades.

    A summary of message classes and malformed reasons goes to stderr (with --summary: to stdout,
    with the rate of the parse alone, reading the file excluded).
    """
    proto = get_protocol(exchange)
    path = existing_file(file)
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    trades = 0
    out = sys.stdout
    if summary:
        raws = [rec.raw for rec in read_capture(path)]
        t0 = time.perf_counter()
        for raw in raws:
            res, rows = proto.scan_safe(raw)
            kinds[res.kind] += 1
            trades += len(rows)
            if res.reason and res.kind in ("malformed", "error"):
                reasons[res.reason] += 1
        elapsed = max(time.perf_counter() - t0, 1e-9)
        parts = ", ".join(f"{k}={kinds[k]}" for k in ("trade", "heartbeat", "ack", "other", "error", "malformed"))
        click.echo(f"{path}: {len(raws)} messages ({parts}); {trades} trades")
        click.echo(f"parsed in {elapsed:.3f} s: {len(raws) / elapsed:,.0f} messages/s")
        for reason, n in reasons.most_common():
            click.echo(f"  {n:6d}  {reason}")
        return
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(_TRADE_COLUMNS)
    for rec in read_capture(path):
        res = proto.parse(rec.raw)
        kinds[res.kind] += 1
        if res.reason and res.kind in ("malformed", "error"):
            reasons[res.reason] += 1
        for t in res.trades:
            trades += 1
            doc = t.as_json()
            if writer is not None:
                writer.writerow(["" if doc[c] is None else doc[c] for c in _TRADE_COLUMNS])
            else:
                out.write(orjson.dumps(doc).decode() + "\n")
    parts = ", ".join(f"{k}={kinds[k]}" for k in ("trade", "heartbeat", "ack", "other", "error", "malformed"))
    click.echo(f"{path}: {sum(kinds.values())} messages ({parts}); {trades} trades", err=True)
    for reason, n in reasons.most_common():
        click.echo(f"  {n:6d}  {reason}", err=True)


# --- exchange-sim --------------------------------------------------------------------------------


@click.command("exchange-sim")
@click.option("--protocol", type=_EXCHANGE, required=True, help="Exchange protocol to speak.")
@click.option(
    "--bars",
    "bars_src",
    default=None,
    help="OHLCV CSV (timestamp,open,high,low,close,volume) for --symbol, or a directory of "
    "SYMBOL.csv files (one symbol each, e.g. BTC-USDT.csv).",
)
@click.option("--symbol", default=None, help="Symbol of a single CSV's bars, BASE-QUOTE (e.g. BTC-USDT).")
@click.option(
    "--symbols",
    multiple=True,
    help="Symbols to serve (repeat or comma-separate). Without --bars each trades its own random walk, "
    "with --history bars of REST history before now; with a --bars directory, a subset of its files.",
)
@click.option("--history", type=click.IntRange(min=0), default=300, show_default=True,
              help="Random walks: bars of history before the start.")
@click.option("--walk-bars", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Random walks: bars played after the start (then the exchange goes down).")
@click.option("--seed", type=int, default=7, show_default=True, help="Random walks: seed (per symbol).")
@click.option(
    "--interval",
    type=click.Choice(["1m", "5m", "15m", "1h"]),
    default=None,
    help="Interval of the bars (default: CSVs: guessed from their first rows; random walks: 5m).",
)
@click.option("--speed", type=float, default=1.0, show_default=True, help="Simulated seconds per real second.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port on 127.0.0.1 (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--start",
    default=None,
    help="Simulated start time (default: the first bar; random walks: now); bars before it are "
    "history served by REST only.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between server heartbeats (where the protocol has them).",
)
# a fault's value outside its range used to be taken silently (0: no fault, < 0: every connection
# dropped or stalled at once, a malformed message every |N| trades)
@click.option("--drop-every", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Fault: close each connection after K seconds.")
@click.option("--refuse", type=click.IntRange(min=0), default=0,
              help="Fault: refuse the first N connection attempts (HTTP 503).")
@click.option("--malformed-every", type=click.IntRange(min=1), default=None,
              help="Fault: a malformed message every N trades.")
@click.option(
    "--stall-after", type=click.FloatRange(min=0), default=None,
    help="Fault: stop sending on each connection S seconds after it opened.",
)
@click.option(
    "--trades-per-frame",
    type=int,
    default=1,
    show_default=True,
    help="Up to N trades of one symbol and bar in a frame, as busy markets send them (kraken, poloniex).",
)
def exchange_sim(
    protocol: str,
    bars_src: str | None,
    symbol: str | None,
    symbols: tuple[str, ...],
    history: int,
    walk_bars: int,
    seed: int,
    interval: str | None,
    speed: float,
    port: int,
    host: str,
    start: str | None,
    heartbeat: float,
    drop_every: float | None,
    refuse: int,
    malformed_every: int | None,
    stall_after: float | None,
    trades_per_frame: int,
) -> None:
    """A local exchange: websocket trades and REST candles that reproduce the bars exactly, for
    one symbol (a CSV) or many in one process (a directory of CSVs, or random walks)."""
    if speed <= 0:
        raise InputError("--speed must be > 0")
    if trades_per_frame < 1:
        raise InputError("--trades-per-frame must be >= 1")
    if trades_per_frame > 1 and not get_protocol(protocol).bundles_trades:
        raise InputError(f"--trades-per-frame {trades_per_frame}: {protocol} sends one trade a frame")
    start_t = parse_time(start, "--start")
    series = sim_series(protocol, bars_src, symbol, _symbols(symbols) if symbols else [], interval=interval,
                        history=history, walk_bars=walk_bars, seed=seed, start=start_t)
    if start_t is None and bars_src is None:
        start_t = series[0].bars[history].open_time if history < len(series[0].bars) else None
    proto = get_protocol(protocol)
    n_bars = sum(len(s.bars) for s in series)

    sim = ExchangeSimulator(
        proto,
        series,
        speed=speed,
        host=host,
        port=port,
        start=start_t.timestamp() if start_t else None,
        heartbeat_s=heartbeat,
        faults=Faults(drop_every, refuse, malformed_every, stall_after),
        trades_per_frame=trades_per_frame,
    )

    def on_start(sim: ExchangeSimulator) -> None:
        ex = protocol.upper()
        click.echo(
            f"exchange simulator ({protocol}) on {sim.ws_url} (REST {sim.rest_url}), "
            f"{len(series)} symbol(s), {n_bars} bars, speed {speed:g}x",
            err=True,
        )
        click.echo(
            f"point barcast at it:\n  export BARCAST_EXCHANGES__{ex}__WS_URL={sim.ws_url}\n"
            f"  export BARCAST_EXCHANGES__{ex}__REST_URL={sim.rest_url}\n"
            f"  export BARCAST_FEEDS__CLOCK=feed   # the simulated clock is not the wall clock",
            err=True,
        )
        click.echo(sim.ws_url, err=False)
        sys.stdout.flush()

    def on_end() -> None:
        click.echo("end of bars reached; serving REST until interrupted", err=True)

    async def main(stop: asyncio.Event) -> None:
        await simulator_daemon(sim, on_start=on_start, on_end=on_end, stop=stop)

    run_until_signal(main)


def sim_series(
    protocol: str,
    bars_src: str | None,
    symbol: str | None,
    symbols: list[str],
    *,
    interval: str | None = None,
    history: int = 300,
    walk_bars: int = 2000,
    seed: int = 7,
    start: datetime | None = None,
) -> list[SimSeries]:
    """What `exchange-sim` serves: one CSV (`--symbol`), a directory of SYMBOL.csv files, or a
    random walk per symbol. Every bad input is named (file and line come from the CSV reader)."""
    if bars_src is None:
        if not symbols:
            raise InputError("give --bars FILE --symbol S, --bars DIR, or --symbols S1,S2,… (random walks)")
        iv = interval or "5m"
        step = timedelta(seconds=interval_seconds(iv))
        now = start or datetime.now(UTC)
        first = floor_time(now, iv) - step * history
        return [
            SimSeries(s, tuple(random_walk_bars(s, history + walk_bars, start=first, interval=iv,
                                                seed=walk_seed(s, seed), price=_walk_price(s, seed))))
            for s in symbols
        ]
    path = Path(bars_src).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        by_symbol = {f.stem.upper(): f for f in files}
        if symbols:
            missing = [s for s in symbols if s not in by_symbol]
            if missing:
                raise InputError(f"{path}: no CSV for {', '.join(missing)} (expected files like {missing[0]}.csv)")
            by_symbol = {s: by_symbol[s] for s in symbols}
        if not by_symbol:
            raise InputError(f"{path}: no SYMBOL.csv files in this directory")
        out = []
        for sym, f in by_symbol.items():
            SeriesKey("x", sym)  # the file name must be a symbol: BASE-QUOTE
            bars = read_bars_csv(f, exchange=protocol, symbol=sym, interval=interval or _guess_interval(f))
            if not bars:
                raise InputError(f"{f}: no bars")
            out.append(SimSeries(sym, tuple(bars)))
        if len({s.bars[0].interval for s in out}) > 1:
            raise InputError(f"{path}: the CSVs have different bar intervals; the simulator serves one")
        return out
    if not symbol:
        raise InputError("--symbol: say which symbol the CSV's bars are for (BASE-QUOTE)")
    file = existing_file(bars_src)
    bars = read_bars_csv(file, exchange=protocol, symbol=symbol.upper(), interval=interval or _guess_interval(file))
    if not bars:
        raise InputError(f"{file}: no bars")
    return [SimSeries(symbol.upper(), tuple(bars))]


def _walk_price(symbol: str, seed: int) -> Decimal:
    """A start price per random-walk symbol, between 1 and 50,000 (log-uniform)."""
    rnd = random.Random(walk_seed(symbol, seed) ^ 0x5EED)
    return Decimal(10 ** rnd.uniform(0, 4.7)).quantize(Decimal("0.01"))


def _guess_interval(path: Path) -> str:
    with path.open(encoding="utf-8") as fh:
        rows = [line.split(",")[0] for _, line in zip(range(3), fh, strict=False)]
    with contextlib.suppress(ValueError, IndexError):
        step = int(rows[2]) - int(rows[1])
        for name in ("1m", "5m", "15m", "1h"):
            if interval_seconds(name) == step:
                return name
    raise InputError(f"{path}: cannot tell the bar interval from the first rows; pass --interval")


# --- ingest --------------------------------------------------------------------------------------


def bar_line(u: BarUpdate) -> str:
    b = u.bar
    return (
        f"{iso(b.open_time)} {b.exchange}:{b.symbol}:{b.interval} O={decimal_text(b.open)} "
        f"H={decimal_text(b.high)} L={decimal_text(b.low)} C={decimal_text(b.close)} "
        f"V={decimal_text(b.volume)} n={'' if b.trade_count is None else b.trade_count} {u.kind}"
    )


@click.command("ingest")
@series_option("Series to ingest (default: the config's series).", many=True, name="series_opt")
@click.option(
    "--clock",
    type=click.Choice(["wall", "feed"]),
    default=None,
    help="What closes bars: the wall clock (live) or feed times only (a simulator). Default: config.",
)
@click.option("--duration", default=None, help="Stop after this long (e.g. 10m); default: until Ctrl-C.")
@click.option("--quiet", is_flag=True, help="Do not print bars as they close.")
@pass_app
def ingest_cmd(
    app: AppContext, series_opt: tuple[list[SeriesKey], ...], clock: str | None, duration: str | None, quiet: bool
) -> None:
    """Ingest live trades into bars in the database (with start-up and reconnect backfill)."""
    config = app.config
    if series_opt:
        keys = flat_series(series_opt)
        config = replace(config, series=tuple(SeriesConfig(k.exchange, k.symbol, k.interval) for k in keys))
    if clock:
        config = replace(config, feeds=replace(config.feeds, clock=clock))  # type: ignore[arg-type]
    database = app.database(create=True)
    limit = parse_duration(duration, "--duration").total_seconds() if duration else None

    progress = progress_bar(app.console)
    backfill_tasks: dict[SeriesKey, Any] = {}

    async def on_bars(updates: list[BarUpdate]) -> None:
        for u in updates:
            if u.kind == "backfilled":  # a bar per backfilled bucket: the progress bar counts them
                key = u.bar.series
                if key not in backfill_tasks:
                    total = config.feeds.backfill_days * 86400 / key.step.total_seconds()
                    backfill_tasks[key] = progress.add_task(f"backfilling {key}", total=total)
                progress.advance(backfill_tasks[key])
            elif not quiet:
                click.echo(bar_line(u))

    async def main(stop: asyncio.Event) -> None:
        if limit:
            asyncio.get_running_loop().call_later(limit, stop.set)
        with progress:
            stats = await ingest_daemon(
                config, database, clock=time.time if config.feeds.clock == "wall" else None, on_bars=on_bars,
                stop=stop,
            )
        for ex, st in stats.items():
            click.echo(
                f"{ex}: {st['messages']} trades={st['trades']} malformed={st['malformed']} "
                f"connects={st['connects']} backfilled={st['backfilled_bars']}",
                err=True,
            )

    run_until_signal(main)


# --- demo ----------------------------------------------------------------------------------------


@click.command("demo")
@click.option(
    "--speed",
    type=click.FloatRange(min=1.0),
    default=60.0,
    show_default=True,
    help="Simulated seconds per real second (60: a 5-minute bar every 5 s).",
)
@click.option("--duration", default="60s", show_default=True, help="How long to run (e.g. 90s, 10m).")
@click.option(
    "--protocol", type=_EXCHANGE, default="binance", show_default=True, help="Exchange protocol the simulator speaks."
)
@click.option("--seed", type=int, default=7, show_default=True, help="Random-walk seed.")
@click.option(
    "--db",
    "db_opt",
    metavar="PATH|URL",
    default=None,
    help="Demo database (default: the global --db, else demo/demo.db in the data directory; kept between runs). "
    "Another SQLite file keeps its models and forecast log in FILE.demo/ beside it.",
)
@click.option("--fresh", is_flag=True, help="Start over: delete the demo's database, models and forecast log first.")
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"HTTP API port (default {DEMO_API_PORT} when free, else any free port; 0: any free port).",
)
@format_option("table", ("table", "json"))
@pass_app
def demo(
    app: AppContext,
    speed: float,
    duration: str,
    protocol: str,
    seed: int,
    db_opt: str | None,
    fresh: bool,
    api_port: int | None,
    fmt: str,
) -> None:
    """A simulated exchange and the whole service, offline: bars, forecasts and a trained model.

    Prints where its database and API are and the commands to try in another terminal; ends with
    a summary (bars, forecasts, model, accuracy). Run it again to continue where it stopped.
    """
    db = db_opt or app.db_url
    if db and "://" not in db:
        db = f"sqlite:///{Path(db).expanduser().resolve()}"
    settings = DemoSettings(
        speed=speed, duration_s=parse_duration(duration, "--duration").total_seconds(), protocol=protocol,
        seed=seed, db_url=db, fresh=fresh, api_port=api_port,
    )
    to_err = fmt == "json"  # stdout carries only the summary document

    def say(text: str) -> None:
        click.echo(text, err=to_err)

    def on_start(run: DemoRun) -> None:
        stored = f"{run.history_stored} bars of history stored"
        if run.stored_before:
            stored += f", continuing after the {run.stored_before} bars of the previous run"
        say(f"demo: {protocol} simulator at {speed:g}x ({run.ws_url}), {stored}")
        say(f"  database  {run.db_url}")
        say(f"  API       {run.api_url}  (docs: {run.api_url}/docs)")
        if run.serving_before:
            say(f"  model     {run.serving_before} serves (from the previous run); {DEMO_ARCH} retrains in the"
                " background; Ctrl-C stops")
        else:
            say(f"  model     {DEMO_ARCH}, trained in the background while persistence serves; Ctrl-C stops")
        say("in another terminal, try:")
        for cmd in run.commands():
            say(f"  {cmd}")

    async def on_bars(updates: list[BarUpdate]) -> None:
        for u in updates:
            if u.kind != "backfilled":
                say(bar_line(u))

    def on_forecast(doc: dict[str, Any]) -> None:
        say(f"forecast {pretty(doc)}")

    async def main(stop: asyncio.Event) -> dict[str, Any]:
        return await demo_daemon(
            app.config, settings, on_start=on_start, on_bars=on_bars, on_forecast=on_forecast, stop=stop
        )

    summary = run_until_signal(main)
    if fmt == "json":
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for line in demo_summary_lines(summary):
            click.echo(line)


def demo_summary_lines(s: dict[str, Any]) -> list[str]:
    bars, model = s["bars"], s["model"]
    live = sum(v for k, v in bars.items() if k not in ("stored", "history_stored", "backfilled"))
    forecasts = s["forecasts"]
    lines = [
        f"demo summary for {s['series']}:",
        f"  bars       {bars['stored']} stored ({bars['history_stored']} history this run, {live} live)",
        f"  forecasts  {sum(forecasts.values())} issued"
        + (f" ({', '.join(f'{m} {n}' for m, n in forecasts.items())})" if forecasts else ""),
    ]
    if model["trained"]:
        verdict = "serving" if model["serving"] == model["trained"] else f"{model['trained_status']}, not serving"
        held = model["held_out"]
        if held.get("mae") is not None and held.get("persistence_mae") is not None:
            verdict += f"; held-out MAE {held['mae']:.2f} vs persistence {held['persistence_mae']:.2f}"
        lines.append(f"  model      {model['trained']} ({verdict})")
    else:
        lines.append(f"  model      serving {model['serving']}; the first {DEMO_ARCH} model has not finished training")
    for m, a in s["accuracy"].items():
        skill = "" if a["skill"] is None else f", skill {100 * a['skill']:+.1f}%"
        lines.append(
            f"  accuracy   {m}: MAE {a['mae']:.2f} vs persistence {a['persistence_mae']:.2f}{skill} "
            f"({a['scores']} scored steps)"
        )
    if not s["accuracy"]:
        lines.append("  accuracy   no forecast has reached its targets yet (run longer: --duration 2m)")
    lines.append(f"  kept in {s['database']}: run `barcast demo` again to continue, `--fresh` to start over")
    return lines


commands: list[click.Command] = [record, parse, exchange_sim, ingest_cmd, demo]
