"""N `barcast run` processes on one PostgreSQL database against one many-symbol simulator.

Shared by the CI-sized test (tests/daemon/test_cluster_e2e.py) and the full-size bench
(bench/cluster.py): the same scenario at two sizes. Everything is real: the simulator's
websocket and REST on 127.0.0.1, the daemons as separate processes (so `kill -9` is real),
the shared database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from daemon.cli.feeds import sim_series
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.live.ownership import assign
from db.engine import Database, open_database
from db.records import SeriesKey


def symbols(n: int) -> list[str]:
    return [f"C{i:03d}-USDT" for i in range(n)]


@dataclass(frozen=True)
class Scenario:
    series: int = 60
    daemons: int = 3
    speed: float = 150.0  # a 5-minute bar every 2 s
    heartbeat_s: float = 0.5
    ttl_s: float = 3.0
    window: int = 32
    history: int = 40
    bars_before_kill: int = 6
    bars_after_rebalance: int = 5

    @property
    def bar_s(self) -> float:
        return 300.0 / self.speed


def config_text(tmp: Path, name: str, db_url: str, ws: str, rest: str, sc: Scenario) -> str:
    series = "".join(f'[[series]]\nexchange = "binance"\nsymbol = "{s}"\n' for s in symbols(sc.series))
    return f"""
[database]
url = "{db_url}"
[paths]
data_dir = "{tmp / name}"
{series}
[exchanges.binance]
ws_url = "{ws}"
rest_url = "{rest}"
[feeds]
clock = "feed"
backfill_days = 0.0
backoff_initial_s = 0.05
backoff_max_s = 0.5
stall_timeout_s = 10.0
[forecast]
device = "cpu"
arch = "linear"
coalesce_ms = 200
[data]
window = {sc.window}
[retrain]
enabled = false
[api]
port = 0
[service]
shutdown_timeout_s = 20
[cluster]
instance = "{name}"
heartbeat_s = {sc.heartbeat_s}
lease_ttl_s = {sc.ttl_s}
"""


@dataclass
class Run:
    """What happened, for the assertions (test) or the report (bench)."""

    sim_start: datetime
    live_from: datetime = field(init=False)
    kill_at: float = 0.0  # monotonic
    killed: str = ""
    killed_series: set[SeriesKey] = field(default_factory=set)
    takeover_s: float | None = None
    rebalance_s: float | None = None
    balance_before: dict[str, int] = field(default_factory=dict)
    balance_during: dict[str, int] = field(default_factory=dict)
    balance_after: dict[str, int] = field(default_factory=dict)
    end_bar: datetime | None = None
    return_codes: dict[str, int | None] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.live_from = self.sim_start


def leases(db: Database) -> dict[SeriesKey, tuple[str, int, datetime]]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT exchange, symbol, interval, owner, token, expires_at FROM series_leases"))
        return {SeriesKey(r[0], r[1], r[2]): (r[3], int(r[4]), r[5]) for r in rows}


def forecast_series(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT DISTINCT symbol FROM forecasts"))}


def owners(db: Database) -> dict[SeriesKey, str]:
    now = datetime.now(UTC)
    return {k: o for k, (o, _t, exp) in leases(db).items() if o and exp > now}


def newest_bar(db: Database) -> datetime | None:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT min(m) FROM (SELECT max(open_time) AS m FROM bars "
                                 "GROUP BY exchange, symbol, interval) x")).scalar()


def newest_forecast(db: Database) -> datetime | None:
    """The newest bar every series has a forecast for (min over series of their newest)."""
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT min(m) FROM (SELECT max(issued_at) AS m FROM forecasts "
                                 "GROUP BY exchange, symbol, interval) x")).scalar()


async def _wait(cond: Any, timeout: float, what: str, poll: float = 0.1) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await asyncio.to_thread(cond):
            return time.monotonic() - t0
        await asyncio.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sim(sc: Scenario) -> tuple[list[SimSeries], datetime]:
    start = datetime.now(UTC).replace(microsecond=0)
    series = sim_series("binance", None, None, symbols(sc.series), history=sc.history, walk_bars=2000, start=start)
    return series, series[0].bars[sc.history].open_time


async def _start_daemon(name: str, tmp: Path, db_url: str, sim: ExchangeSimulator, sc: Scenario,
                        run: Run) -> asyncio.subprocess.Process:
    """`barcast run` as daemon `name` on `db_url`, fed by `sim`, its stderr in `run.logs[name]`."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(config_text(tmp, name, db_url, sim.ws_url, sim.rest_url, sc))
    run.logs[name] = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARCAST_")}
    with open(run.logs[name], "ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "run", env={**env, "BARCAST_CONFIG": str(cfg)},
            stdout=asyncio.subprocess.DEVNULL, stderr=err)


async def _stop_all(procs: dict[str, asyncio.subprocess.Process], run: Run) -> None:
    """SIGTERM every daemon still running, then collect each one's exit code (kill after 40 s)."""
    for p in procs.values():
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    for name, p in procs.items():
        try:
            run.return_codes[name] = await asyncio.wait_for(p.wait(), 40)
        except TimeoutError:
            p.kill()
            run.return_codes[name] = await p.wait()


async def run_cluster(db_url: str, tmp: Path, sc: Scenario, *, log: Any = print) -> tuple[Run, list[SimSeries]]:
    """Start the simulator and N daemons; wait for a balanced cluster; run some bars; kill -9 one;
    wait for the takeover; run; restart it; wait for the rebalance; run; SIGTERM all."""
    series, sim_start = _sim(sc)
    run = Run(sim_start)
    names = [f"d{i + 1}" for i in range(sc.daemons)]
    keys = [SeriesKey("binance", s.symbol) for s in series]
    want = assign(keys, names)
    db = open_database(db_url)
    procs: dict[str, asyncio.subprocess.Process] = {}
    sim = ExchangeSimulator(PROTOCOLS["binance"], series, speed=sc.speed, start=sim_start.timestamp(),
                            heartbeat_s=0.05)
    async with sim:
        async def start(name: str) -> None:
            procs[name] = await _start_daemon(name, tmp, db_url, sim, sc, run)

        def balanced(expect: dict[SeriesKey, str]) -> bool:
            return owners(db) == expect

        def bars_past(t: datetime) -> bool:
            newest = newest_bar(db)
            return newest is not None and newest >= t

        def forecasts_past(t: datetime) -> bool:
            newest = newest_forecast(db)
            return newest is not None and newest >= t and len(forecast_series(db)) == sc.series

        try:
            await asyncio.gather(*(start(n) for n in names))
            await _wait(lambda: balanced(want), 120, "every series owned by its rendezvous winner")
            run.balance_before = dict(Counter(owners(db).values()))
            log(f"balanced: {run.balance_before}")
            await _wait(lambda: forecasts_past(sim_start + timedelta(minutes=5 * sc.bars_before_kill)), 120,
                        f"forecasts of {sc.bars_before_kill} live bars of every series")
            victim = names[1]
            run.killed = victim
            run.killed_series = {k for k, o in want.items() if o == victim}
            procs[victim].kill()
            run.kill_at = time.monotonic()
            run.return_codes[f"{victim}-killed"] = await procs[victim].wait()
            survivors = [n for n in names if n != victim]
            during = assign(keys, survivors)
            run.takeover_s = await _wait(lambda: balanced(during), 60, "the killed daemon's series taken over",
                                         poll=0.05)
            run.balance_during = dict(Counter(owners(db).values()))
            log(f"kill -9 {victim}: its {len(run.killed_series)} series taken over in {run.takeover_s:.2f} s "
                f"(TTL {sc.ttl_s} s, bar {sc.bar_s:.1f} s): {run.balance_during}")
            seen = newest_bar(db)
            assert seen is not None
            await _wait(lambda: bars_past(seen + timedelta(minutes=5 * 3)), 120, "3 more bars after the takeover")
            await start(victim)
            t0 = time.monotonic()
            await _wait(lambda: balanced(want), 120, "the restarted daemon's share back")
            run.rebalance_s = time.monotonic() - t0
            run.balance_after = dict(Counter(owners(db).values()))
            log(f"restarted {victim}: rebalanced in {run.rebalance_s:.2f} s: {run.balance_after}")
            seen = newest_bar(db)
            assert seen is not None
            await _wait(lambda: forecasts_past(seen + timedelta(minutes=5 * sc.bars_after_rebalance)), 120,
                        f"forecasts of {sc.bars_after_rebalance} bars after the rebalance")
            run.end_bar = newest_forecast(db)
        finally:
            await _stop_all(procs, run)
            db.close()
    return run, series


async def run_join(db_url: str, tmp: Path, sc: Scenario, *, log: Any = print) -> tuple[Run, list[SimSeries]]:
    """Start the simulator and one daemon; once it owns every series and forecasts live bars, a
    second one joins; wait for the rebalance; run; SIGTERM both. `Run.killed` is unused;
    `Run.killed_series` are the series the first daemon handed on."""
    series, sim_start = _sim(sc)
    run = Run(sim_start)
    keys = [SeriesKey("binance", s.symbol) for s in series]
    alone, shared = assign(keys, ["d1"]), assign(keys, ["d1", "d2"])
    run.killed_series = {k for k, o in shared.items() if o == "d2"}
    db = open_database(db_url)
    procs: dict[str, asyncio.subprocess.Process] = {}
    sim = ExchangeSimulator(PROTOCOLS["binance"], series, speed=sc.speed, start=sim_start.timestamp(),
                            heartbeat_s=0.05)
    async with sim:
        async def start(name: str) -> None:
            procs[name] = await _start_daemon(name, tmp, db_url, sim, sc, run)

        def forecasts_past(t: datetime) -> bool:
            newest = newest_forecast(db)
            return newest is not None and newest >= t and len(forecast_series(db)) == sc.series

        try:
            await start("d1")
            await _wait(lambda: owners(db) == alone, 120, "every series owned by the first daemon")
            run.balance_before = dict(Counter(owners(db).values()))
            await _wait(lambda: forecasts_past(sim_start + timedelta(minutes=5 * sc.bars_before_kill)), 120,
                        f"forecasts of {sc.bars_before_kill} live bars of every series")
            await start("d2")
            t0 = time.monotonic()
            await _wait(lambda: owners(db) == shared, 120, "the second daemon's share")
            run.rebalance_s = time.monotonic() - t0
            run.balance_after = dict(Counter(owners(db).values()))
            log(f"d2 joined: rebalanced in {run.rebalance_s:.2f} s: {run.balance_after}")
            seen = newest_bar(db)
            assert seen is not None
            await _wait(lambda: forecasts_past(seen + timedelta(minutes=5 * sc.bars_after_rebalance)), 120,
                        f"forecasts of {sc.bars_after_rebalance} bars after the rebalance")
            run.end_bar = newest_forecast(db)
        finally:
            await _stop_all(procs, run)
            db.close()
    return run, series


def check(db_url: str, run: Run, series: list[SimSeries]) -> dict[str, Any]:
    """The exactly-once checks over the whole run; returns counts for the report."""
    assert run.end_bar is not None
    db = open_database(db_url)
    try:
        with db.engine.connect() as conn:
            bars = defaultdict(list)
            for r in conn.execute(text("SELECT symbol, open_time, open, high, low, close, volume FROM bars "
                                       "ORDER BY symbol, open_time")):
                bars[r[0]].append(r[1:])
            sets = conn.execute(text(
                "SELECT symbol, issued_at, model_id, count(*), min(issued_by), max(issued_by) FROM forecasts "
                "WHERE issued_at >= :t0 AND issued_at <= :t1 GROUP BY symbol, issued_at, model_id"),
                {"t0": run.live_from, "t1": run.end_bar}).all()
    finally:
        db.close()
    for s in series:
        stored = bars[s.symbol]
        expected = [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in s.bars
                    if b.open_time <= run.end_bar]
        got = [r for r in stored if r[0] <= run.end_bar]
        # gap-free and exactly the exchange's bars (exact decimals), from the first stored one
        first = got[0][0]
        assert [tuple(r) for r in got] == [e for e in expected if e[0] >= first], s.symbol
        assert first < run.live_from, s.symbol
    per = Counter((r[0], r[1]) for r in sets)
    assert set(per.values()) == {1}, [k for k, n in per.items() if n > 1][:5]  # one set per (series, bar)
    assert all(r[3] == 16 for r in sets)
    assert all(r[4] == r[5] for r in sets)  # one issuer per set
    live_bars = {b.open_time for b in series[0].bars if run.live_from <= b.open_time <= run.end_bar}
    missing = [(s.symbol, t) for s in series for t in live_bars if (s.symbol, t) not in per]
    assert not missing, missing[:5]
    issuers = Counter(r[4] for r in sets)
    victim = {k.symbol for k in run.killed_series}
    by_survivors = sum(1 for r in sets if r[0] in victim and r[4] != run.killed)
    return {"forecast_sets": len(sets), "bars_per_series": len(live_bars), "issued_by": dict(sorted(issuers.items())),
            "victim_series_by_survivors": by_survivors}
