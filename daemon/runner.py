"""The service's runners: ingest only, the full service, and the demo (simulator + service).

The CLI (`barcast ingest|run|demo`), systemd (`barcast run`) and tests all start the daemon
through these functions; the CLI only parses arguments and formats what the callbacks hand it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.bars import BarUpdate
from daemon.config import Config, ExchangeConfig, FeedsConfig, SeriesConfig, socket_path
from daemon.feeds import protocol as get_protocol
from daemon.feeds.base import ExchangeProtocol
from daemon.feeds.randomwalk import random_walk_bars
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.ops import reports
from db.engine import Database, open_database, sqlite_file
from db.records import Bar, SeriesKey

if TYPE_CHECKING:
    from daemon.live.service import Service

OnBars = Callable[[list[BarUpdate]], Awaitable[None]]
OnForecast = Callable[[dict[str, Any]], None]


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[Any]]) -> Any:
    """Run `main(stop)`; SIGINT/SIGTERM set `stop` so it can finish cleanly. Returns its result."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


# --- capture and simulator ---------------------------------------------------------------------


async def record_daemon(
    proto: ExchangeProtocol,
    natives: list[str],
    feeds: FeedsConfig,
    ws_url: str,
    out_path: Path,
    *,
    stop: asyncio.Event,
    limit_s: float | None = None,
    max_messages: int | None = None,
) -> Counter[str]:
    """`barcast record`: raw messages of one connection appended to a capture file until `stop`,
    `limit_s` or `max_messages`; returns counts per event kind and message class."""
    from daemon.feeds.capture import CaptureWriter
    from daemon.feeds.connection import FeedConnection

    counts = Counter[str]()
    with out_path.open("a", encoding="utf-8") as fh:
        writer = CaptureWriter(fh, ws_url)
        conn = FeedConnection(proto, natives, feeds, url=ws_url, capture=writer)
        task = asyncio.create_task(conn.run())
        deadline = time.monotonic() + limit_s if limit_s else None
        try:
            while not stop.is_set():
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    ev = await asyncio.wait_for(conn.queue.get(), timeout=min(timeout or 1.0, 1.0))
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    continue
                counts[ev.kind] += 1
                if ev.kind == "message":
                    counts[proto.parse(ev.text).kind] += 1
                    if max_messages is not None and counts["message"] >= max_messages:
                        break
                if counts["message"] % 100 == 0:
                    writer.flush()
        finally:
            conn.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            writer.flush()
    return counts


async def simulator_daemon(
    sim: ExchangeSimulator,
    *,
    on_start: Callable[[ExchangeSimulator], None],
    on_end: Callable[[], None],
    stop: asyncio.Event,
) -> None:
    """`barcast exchange-sim`: serve until `stop`; at the end of the bars keep serving REST."""
    async with sim:
        on_start(sim)
        finished = asyncio.create_task(sim.finished.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([finished, stopper], return_when=asyncio.FIRST_COMPLETED)
        if finished.done():
            on_end()
            await stop.wait()
        finished.cancel()
        stopper.cancel()


# --- ingest only -------------------------------------------------------------------------------


async def ingest_daemon(
    config: Config,
    database: Database,
    *,
    clock: Callable[[], float] | None,
    on_bars: OnBars | None,
    stop: asyncio.Event,
) -> dict[str, dict[str, Any]]:
    """Feeds -> bars -> database until `stop`; returns the per-exchange feed stats."""
    from daemon.ingest import Ingest

    ingest = Ingest.from_config(config, database=database, clock=clock, on_bars=on_bars)
    task = asyncio.create_task(ingest.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        ingest.stop()
        stopper.cancel()
        await task
    return dict(ingest.stats())


# --- the service -------------------------------------------------------------------------------


def run_service(config: Config) -> None:
    """`barcast run` (and systemd): the live service in the foreground until SIGTERM/SIGINT."""
    from daemon.live.service import run_service as serve

    asyncio.run(serve(config))


async def service_daemon(
    config: Config,
    *,
    clock: Callable[[], float] | None,
    on_bars: OnBars | None,
    on_forecast: OnForecast | None,
    stop: asyncio.Event,
    on_started: Callable[[Service], None] | None = None,
) -> None:
    """The whole service until `stop` (the caller owns signals), handing each forecast to
    `on_forecast` as it is issued and the started service to `on_started`."""
    from daemon.live.service import Service

    svc = Service(config, clock=clock, on_bars=on_bars)
    try:
        await svc.start()
        if on_started is not None:
            on_started(svc)

        async def show() -> None:
            sub = svc.subscribe()
            try:
                async for _, doc in sub:
                    if on_forecast is not None:
                        on_forecast(doc)
            finally:
                await sub.aclose()

        shower = asyncio.create_task(show())
        try:
            await stop.wait()
        finally:
            shower.cancel()
    finally:
        await svc.shutdown()


async def retrain_standalone(
    config: Config, database: Database, key: SeriesKey | None, *, epochs: int | None = None
) -> list[Any]:
    """`barcast retrain` with no daemon: the daemon's retraining job (child process, lease) here,
    for one series' model group or all of them; returns each group's outcome (None: not run)."""
    from daemon.live.retrainer import Retrainer
    from trainer.retrain_job import ensure_baseline

    if epochs is not None:
        config = replace(config, train=replace(config.train, epochs=epochs))
    await asyncio.to_thread(ensure_baseline, database, config.series_keys)

    async def nothing(group: str, outcome: Any) -> None:
        return None

    every = list(dict.fromkeys(config.model_group(k) for k in config.series_keys))
    groups = [config.model_group(key)] if key else every
    retrainer = Retrainer(config, database, nothing, only=groups)
    return [await retrainer.retrain(g, reason="manual (standalone)", hurry=True) for g in groups]


# --- the demo ----------------------------------------------------------------------------------

#: The model the demo trains and serves, in one place: the fastest real model that beats
#: persistence on the demo's momentum walk (trains in about a second); its fan is its training
#: residuals scaled by the window's volatility. Not `har` (the live default): the demo's walk
#: has momentum but a constant volatility, so a volatility model has nothing to forecast there.
DEMO_ARCH = "linear"
#: Input bars per window for the demo's model (a 256-bar linear model overfits 1,000 bars).
DEMO_WINDOW = 64
DEMO_SYMBOL = "BTC-USDT"
#: Bars of history stored before the live part, enough to train and hold out DEMO_HOLDOUT_BARS.
DEMO_HISTORY_BARS = 1200
DEMO_HOLDOUT_BARS = 200
#: Share of the previous bar's return carried into the next (see daemon.feeds.randomwalk).
DEMO_MOMENTUM = 0.5
DEMO_API_PORT = 8787


@dataclass(frozen=True, slots=True)
class DemoSettings:
    speed: float = 60.0
    duration_s: float = 60.0
    protocol: str = "binance"
    seed: int = 7
    #: Database URL (None: `<data dir>/demo/demo.db`).
    db_url: str | None = None
    #: Start over: delete the demo's database, models and forecast log first.
    fresh: bool = False
    #: HTTP API port (None: DEMO_API_PORT when free, else any free port).
    api_port: int | None = None


@dataclass
class DemoRun:
    """What a demo is and did: where to look while it runs, and its summary at the end."""

    db_url: str
    demo_dir: Path
    forecast_log: Path
    series: SeriesKey
    ws_url: str = ""
    api_url: str = ""
    history_stored: int = 0
    #: Bars an earlier demo left in the database, and the model serving at the start (a rerun).
    stored_before: int = 0
    serving_before: str | None = None
    bar_kinds: Counter[str] = field(default_factory=Counter)
    forecasts: Counter[str] = field(default_factory=Counter)

    def commands(self) -> list[str]:
        """The commands to try in another terminal while the demo runs, exactly as printed."""
        db = shlex.quote(self.db_url)
        port = self.api_url.rsplit(":", 1)[-1]
        return [
            f"barcast --db {db} status --api {self.api_url}",
            f"barcast tail -f --file {shlex.quote(str(self.forecast_log))}",
            f"barcast --db {db} forecasts --latest",
            f"barcast --db {db} accuracy",
            f"curl localhost:{port}/health",
        ]

    def summary(self, database: Database) -> dict[str, Any]:
        """Bars, forecasts, the serving model and its live accuracy, for people and programs."""
        from db import registry
        from db.bars import count_bars
        champ = registry.champion(database, self.series)
        trained = [m for m in registry.list_models(database, series=self.series) if m.arch != "persistence"]
        acc: dict[str, dict[str, Any]] = {}
        for d in reports.accuracy_docs(database, series=self.series, since=None):
            a = acc.setdefault(d["model_id"], {"n": 0, "mae": 0.0, "persistence_mae": 0.0, "steps": 0})
            a["n"] += d["n"]
            a["mae"] += d["mae"]
            a["persistence_mae"] += d["persistence_mae"]
            a["steps"] += 1
        accuracy = {
            m: {"scores": a["n"], "mae": a["mae"] / a["steps"], "persistence_mae": a["persistence_mae"] / a["steps"],
                "skill": (1 - a["mae"] / a["persistence_mae"]) if a["persistence_mae"] else None}
            for m, a in acc.items()
        }
        latest = trained[0] if trained else None
        held_out: dict[str, Any] = {}
        if latest is not None:
            m = latest.metrics or {}
            held_out = {"mae": ((m.get("test") or {}).get("mean") or {}).get("mae"),
                        "persistence_mae": ((m.get("persistence") or {}).get("mean") or {}).get("mae")}
        return {
            "series": str(self.series),
            "database": self.db_url,
            "api": self.api_url,
            "forecast_log": str(self.forecast_log),
            "bars": {"stored": count_bars(database, self.series), "history_stored": self.history_stored,
                     **{k: v for k, v in sorted(self.bar_kinds.items())}},
            "forecasts": dict(sorted(self.forecasts.items())),
            "model": {"serving": champ.id if champ else None, "arch": champ.arch if champ else None,
                      "trained": latest.id if latest else None, "trained_status": latest.status if latest else None,
                      "held_out": held_out},
            "accuracy": accuracy,
        }


def demo_dir(base: Config, db_url: str | None = None) -> Path:
    """Where a demo keeps its models, forecast log and control socket: `<data dir>/demo` with its
    default database, else one directory per database (`<file>.demo/` beside a SQLite file), so
    demos on different databases neither mix their logs, share a control socket, nor `--fresh`
    away each other's models."""
    default = base.data_dir / "demo"
    if db_url is None:
        return default
    path = sqlite_file(db_url)
    if path is None:
        import hashlib

        return base.data_dir / f"demo-{hashlib.sha256(db_url.encode()).hexdigest()[:12]}"
    if path.resolve() == (default / "demo.db").resolve():
        return default
    return path.with_name(f"{path.name}.demo")


def _port_or_free(port: int, host: str = "127.0.0.1") -> int:
    """`port` when nothing listens there, else 0 (the API then takes any free port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return 0
    return port


def start_over(directory: Path, db_url: str) -> None:
    """`--fresh`: forget the previous demo's database, models and forecast log."""
    path = sqlite_file(db_url)
    if path is not None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif db_url:
        from db.errors import InputError

        raise InputError(f"--fresh only deletes a SQLite demo database, not {db_url.split('@')[-1]}")
    for sub in ("models", "logs"):
        shutil.rmtree(directory / sub, ignore_errors=True)


def demo_config(base: Config, settings: DemoSettings, sim: ExchangeSimulator, directory: Path, db_url: str,
                api_port: int) -> Config:
    """The base config pointed at the simulator, the demo's own files, and the demo's model."""
    protocol = settings.protocol
    return replace(
        base,
        series=(SeriesConfig(protocol, DEMO_SYMBOL, "5m"),),
        exchanges={**base.exchanges, protocol: ExchangeConfig(sim.ws_url, sim.rest_url)},
        feeds=replace(base.feeds, backfill_days=1.0, backoff_initial_s=0.2, backoff_max_s=2.0),
        database=replace(base.database, url=db_url),
        paths=replace(base.paths, data_dir=str(directory), log_dir="", artifacts_dir=""),
        api=replace(base.api, host="127.0.0.1", port=api_port, token=""),
        data=replace(base.data, window=DEMO_WINDOW),
        # a linear model needs no GPU probe (TensorFlow import) to wait for
        forecast=replace(base.forecast, log_file="", device="cpu", arch=DEMO_ARCH),
        retrain=replace(base.retrain, enabled=True, initial=True, holdout_bars=DEMO_HOLDOUT_BARS,
                        history_days=30.0, margin=0.0),
        service=replace(base.service, control_socket=str(socket_path(directory / "barcast.sock"))),
    )


def _previous(database: Database, key: SeriesKey) -> tuple[int, str | None]:
    """What an earlier demo left: its bars, and the model it served (None: persistence or none)."""
    from db import registry
    from db.bars import count_bars
    from trainer.retrain_job import BASELINE_ID

    champ = registry.champion(database, key)
    return count_bars(database, key), (champ.id if champ is not None and champ.id != BASELINE_ID else None)


def _history(database: Database, key: SeriesKey, settings: DemoSettings) -> tuple[list[Bar], int]:
    """The walk: stored history continues the previous demo's (same price, no overlap), then the
    live part. Returns the bars and the index of the first live bar."""
    from db.bars import latest_bar

    step = key.step
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    live_from = now - timedelta(minutes=now.minute % 5)
    start = live_from - DEMO_HISTORY_BARS * step
    price = Decimal("30000.00")
    seed = settings.seed
    newest = latest_bar(database, key)
    if newest is not None:
        price = newest.close
        seed += int(newest.open_time.timestamp()) // 300
        start = max(start, newest.open_time + step)
    history = max(0, int((live_from - start) / step))
    live = int(settings.duration_s * settings.speed / step.total_seconds()) + 10
    bars = random_walk_bars(DEMO_SYMBOL, history + live, start=start, seed=seed, price=price,
                            momentum=DEMO_MOMENTUM)
    return [replace(b, exchange=key.exchange, source="backfill") for b in bars], history


async def demo_daemon(
    base: Config,
    settings: DemoSettings,
    *,
    on_start: Callable[[DemoRun], None] | None = None,
    on_bars: OnBars | None = None,
    on_forecast: OnForecast | None = None,
    stop: asyncio.Event,
) -> dict[str, Any]:
    """A local simulated exchange on a momentum random walk plus the whole service (retraining
    on), for `duration_s`; returns the summary. The history is stored first, so the first model
    trains at once while persistence serves."""
    from db.bars import upsert_bars

    directory = demo_dir(base, settings.db_url)
    directory.mkdir(parents=True, exist_ok=True)
    db_url = settings.db_url or f"sqlite:///{directory / 'demo.db'}"
    if settings.fresh:
        start_over(directory, db_url)
    key = SeriesKey(settings.protocol, DEMO_SYMBOL, "5m")
    database = await asyncio.to_thread(open_database, db_url, upgrade=settings.db_url is None)
    try:
        stored_before, serving_before = await asyncio.to_thread(_previous, database, key)
        bars, history = await asyncio.to_thread(_history, database, key, settings)
        await asyncio.to_thread(upsert_bars, database, bars[:history])
        sim_bars = tuple(replace(b, exchange="sim", source="live") for b in bars)
        sim = ExchangeSimulator(
            get_protocol(settings.protocol),
            [SimSeries(DEMO_SYMBOL, sim_bars)],
            speed=settings.speed,
            start=bars[history].open_time.timestamp(),
            heartbeat_s=1.0,
        )
        port = _port_or_free(DEMO_API_PORT) if settings.api_port is None else settings.api_port
        async with sim:
            config = demo_config(base, settings, sim, directory, db_url, port)
            run = DemoRun(db_url, directory, config.forecast_log, key, ws_url=sim.ws_url, history_stored=history,
                          stored_before=stored_before, serving_before=serving_before)

            def started(svc: Service) -> None:
                run.api_url = svc.api.url if svc.api is not None else ""
                if on_start is not None:
                    on_start(run)

            async def counted(updates: list[BarUpdate]) -> None:
                for u in updates:
                    run.bar_kinds[u.kind] += 1
                if on_bars is not None:
                    await on_bars(updates)

            def forecast(doc: dict[str, Any]) -> None:
                run.forecasts[str(doc.get("model_id"))] += 1
                if on_forecast is not None:
                    on_forecast(doc)

            asyncio.get_running_loop().call_later(settings.duration_s, stop.set)
            await service_daemon(config, clock=sim.clock.now, on_bars=counted, on_forecast=forecast, stop=stop,
                                 on_started=started)
        return await asyncio.to_thread(run.summary, database)
    finally:
        database.close()
