"""The service's runners: ingest only, the full service, and the demo (simulator + service).

The CLI (`barcast ingest|run|demo`), systemd (`barcast run`) and tests all start the daemon
through these functions; the CLI only parses arguments and formats what the callbacks hand it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon.bars import BarUpdate
from daemon.config import Config, ExchangeConfig, SeriesConfig
from daemon.feeds import protocol as get_protocol
from daemon.feeds.randomwalk import random_walk_bars
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from db.engine import Database

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
) -> None:
    """The whole service until `stop` (the caller owns signals), handing each forecast to
    `on_forecast` as it is issued."""
    from daemon.live.service import Service

    svc = Service(config, clock=clock, on_bars=on_bars)
    await svc.start()

    async def show() -> None:
        async for doc in svc.subscribe():
            if on_forecast is not None:
                on_forecast(doc)

    shower = asyncio.create_task(show())
    try:
        await stop.wait()
    finally:
        shower.cancel()
        await svc.shutdown()


# --- the demo ----------------------------------------------------------------------------------

DEMO_SYMBOL = "BTC-USDT"
DEMO_HISTORY_BARS = 300


@dataclass(frozen=True, slots=True)
class DemoSettings:
    speed: float = 60.0
    duration_s: float = 60.0
    protocol: str = "binance"
    seed: int = 7
    db_path: Path | None = None


@dataclass
class DemoRun:
    """What a demo did, for the CLI's summary."""

    db_path: Path
    ws_url: str = ""
    bar_kinds: Counter[str] = field(default_factory=Counter)


def demo_config(base: Config, settings: DemoSettings, sim: ExchangeSimulator, data_dir: Path, db_path: Path) -> Config:
    """The base config pointed at the simulator and the demo's database."""
    protocol = settings.protocol
    config = replace(
        base,
        series=(SeriesConfig(protocol, DEMO_SYMBOL, "5m"),),
        exchanges={**base.exchanges, protocol: ExchangeConfig(sim.ws_url, sim.rest_url)},
        feeds=replace(base.feeds, backfill_days=1.0, backoff_initial_s=0.2, backoff_max_s=2.0),
    )
    return replace(
        config,
        database=replace(config.database, url=f"sqlite:///{db_path}"),
        paths=replace(config.paths, data_dir=str(data_dir), log_dir="", artifacts_dir=""),
        api=replace(config.api, port=0),
        # the demo's model is persistence: no GPU probe (TensorFlow import) to wait for
        forecast=replace(config.forecast, log_file="", device="cpu"),
        # 300 bars of history are too few to train a 256-bar model: persistence serves
        retrain=replace(config.retrain, enabled=False),
        service=replace(config.service, control_socket=""),
    )


async def demo_daemon(
    base: Config,
    settings: DemoSettings,
    *,
    data_dir: Path,
    on_start: Callable[[DemoRun], None] | None = None,
    on_bars: OnBars | None = None,
    on_forecast: OnForecast | None = None,
    stop: asyncio.Event,
) -> DemoRun:
    """A local simulated exchange on a random walk plus the whole service, for `duration_s`."""
    history = DEMO_HISTORY_BARS
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=now.minute % 5) - timedelta(minutes=5 * history)
    n = history + int(settings.duration_s * settings.speed / 300) + 10
    bars = random_walk_bars(DEMO_SYMBOL, n, start=start, seed=settings.seed)
    sim = ExchangeSimulator(
        get_protocol(settings.protocol),
        [SimSeries(DEMO_SYMBOL, tuple(bars))],
        speed=settings.speed,
        start=bars[history].open_time.timestamp(),
        heartbeat_s=1.0,
    )
    async with sim:
        db_path = settings.db_path or data_dir / "demo.db"
        config = demo_config(base, settings, sim, data_dir, db_path)
        run = DemoRun(db_path, sim.ws_url)
        if on_start is not None:
            on_start(run)

        async def counted(updates: list[BarUpdate]) -> None:
            for u in updates:
                run.bar_kinds[u.kind] += 1
            if on_bars is not None:
                await on_bars(updates)

        asyncio.get_running_loop().call_later(settings.duration_s, stop.set)
        await service_daemon(config, clock=sim.clock.now, on_bars=counted, on_forecast=on_forecast, stop=stop)
    return run
