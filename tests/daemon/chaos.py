"""Chaos harness: `kill -9` of `barcast run` at random moments of an accelerated replay through the
exchange simulator (real Binance bars), a restart after each kill, then an account of what was
lost. Used by tests/daemon/test_chaos.py (a few kills, every CI run) and bench/chaos.py (many).

What counts as lost, against the exchange's bars (what an uninterrupted run stores):
- bars missing, extra or different from the exchange's before `end`;
- bars with no forecast, or forecast by more than one model; forecast rows in the database that
  the forecast log lacks, log lines the database lacks, log lines written twice;
- restarts whose first closed bar has no forecast;
- processes of a killed daemon (its training child, anything else) still running at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from db.bars import latest_bar, read_bars
from db.engine import open_database
from db.forecasts import query_forecasts
from tests.daemon.livehelp import SERIES, SIM_START, config_text, real_bars, seed_history

HISTORY_END = datetime(2020, 12, 20, tzinfo=UTC)
RETRAIN = "every_hours = 0.004\nholdout_bars = 48\nhistory_days = 3"
#: A killed daemon's series leases expire in 2 s (shared mode on PostgreSQL), not the default 60 s.
CLUSTER = "\n[cluster]\nheartbeat_s = 0.5\nlease_ttl_s = 2.0\n"


@dataclass
class ChaosReport:
    kills: int = 0
    restarts: int = 0
    bars_expected: int = 0
    bars_wrong: int = 0
    forecasts_expected: int = 0
    forecasts_missing: list[datetime] = field(default_factory=list)
    bars_forecast_twice: int = 0
    log_missing: int = 0
    log_extra: int = 0
    log_duplicated: int = 0
    first_bar_unforecast: list[datetime] = field(default_factory=list)
    children_seen: int = 0
    orphans: list[int] = field(default_factory=list)

    @property
    def rows_lost(self) -> int:
        return self.bars_wrong + len(self.forecasts_missing) + self.log_missing

    @property
    def clean(self) -> bool:
        return not (self.rows_lost or self.bars_forecast_twice or self.log_extra or self.log_duplicated
                    or self.first_bar_unforecast or self.orphans)

    def summary(self) -> str:
        return (f"kills survived {self.kills}/{self.restarts} restarts; bars {self.bars_expected} "
                f"(wrong {self.bars_wrong}); forecasts {self.forecasts_expected} (missing "
                f"{len(self.forecasts_missing)}, twice {self.bars_forecast_twice}); log missing {self.log_missing}, "
                f"extra {self.log_extra}, duplicated {self.log_duplicated}; first bar after a restart without "
                f"forecast {len(self.first_bar_unforecast)}; training/other children seen {self.children_seen}, "
                f"orphaned {len(self.orphans)}; rows lost {self.rows_lost}")


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (read from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(entry))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def run_chaos(shared_dir: Path, work: Path, db_url: str, *, kills: int, seed: int = 1,
                    hours: float = 8.0, speed: float = 600.0, max_alive_s: float = 3.0,
                    log: object = None) -> ChaosReport:
    """Replay `hours` of bars after SIM_START at `speed`x, killing the daemon `kills` times, each
    at a random moment up to `max_alive_s` after it forecast its first bar; then let the last
    daemon catch up to `end`, stop it with SIGTERM and account for everything."""
    rnd = random.Random(seed)
    end = SIM_START + timedelta(hours=hours)
    played = real_bars(shared_dir, end + timedelta(hours=4))  # the exchange plays on past `end`
    seed_history(db_url, played, HISTORY_END)
    report = ChaosReport()
    children: set[int] = set()
    restart_marks: list[datetime] = []  # newest stored bar when each restarted daemon came up
    db = open_database(db_url)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if log else (lambda msg: None)

    def newest_forecast() -> datetime | None:
        found = query_forecasts(db, SERIES, limit=1)
        return found[0].issued_at if found else None

    sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries(SERIES.symbol, tuple(played))], speed=speed,
                            start=SIM_START.timestamp(), heartbeat_s=0.05)
    async with sim:
        cfg = work / "barcast.toml"
        cfg.write_text(config_text(work, db_url, sim.ws_url, sim.rest_url, retrain=RETRAIN) + CLUSTER)
        env = {**os.environ, "BARCAST_CONFIG": str(cfg)}
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)
        daemon_log = (work / "daemon.log").open("ab")

        async def start() -> asyncio.subprocess.Process:
            newest = await asyncio.to_thread(latest_bar, db, SERIES)
            restart_marks.append(newest.open_time if newest else HISTORY_END)
            return await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon", "run", env=env,
                                                        stdout=asyncio.subprocess.DEVNULL, stderr=daemon_log)

        async def watch(proc: asyncio.subprocess.Process, until: float) -> None:
            """Record the daemon's children (training runs) until `until` (loop time)."""
            loop = asyncio.get_running_loop()
            while loop.time() < until and proc.returncode is None:
                children.update(_children(proc.pid))
                await asyncio.sleep(0.05)

        async def first_forecast(proc: asyncio.subprocess.Process, after: datetime | None) -> None:
            for _ in range(3000):
                now = await asyncio.to_thread(newest_forecast)
                if now is not None and (after is None or now > after):
                    return
                assert proc.returncode is None, "daemon exited: " + (work / "daemon.log").read_text()[-3000:]
                children.update(_children(proc.pid))
                await asyncio.sleep(0.1)
            raise AssertionError("the restarted daemon forecast nothing")

        loop = asyncio.get_running_loop()
        for i in range(kills):
            before = await asyncio.to_thread(newest_forecast)
            proc = await start()
            report.restarts += 1
            await first_forecast(proc, before)
            await watch(proc, loop.time() + rnd.uniform(0.0, max_alive_s))
            children.update(_children(proc.pid))
            proc.kill()  # SIGKILL: no chance to clean up
            await proc.wait()
            report.kills += 1
            say(f"kill {i + 1}/{kills}: daemon {proc.pid}, {len(children)} children seen so far")
        proc = await start()
        report.restarts += 1
        last = max(b.open_time for b in played if b.open_time < end)
        for _ in range(6000):
            got = await asyncio.to_thread(newest_forecast)
            if got is not None and got >= last:
                break
            assert proc.returncode is None, "daemon exited: " + (work / "daemon.log").read_text()[-3000:]
            children.update(_children(proc.pid))
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        daemon_log.close()

    # every child any daemon had must be gone (training children die with their daemon)
    deadline = loop.time() + 30
    while loop.time() < deadline and any(_running(p) for p in children):
        await asyncio.sleep(0.2)
    report.children_seen = len(children)
    report.orphans = sorted(p for p in children if _running(p))
    _account(report, db, played, end, work, restart_marks[1:])
    db.close()
    return report


def _account(report: ChaosReport, db: object, played: list, end: datetime, work: Path,
             restarts: list[datetime]) -> None:
    want = [b for b in played if HISTORY_END <= b.open_time < end]
    stored = read_bars(db, SERIES, since=HISTORY_END, until=end)  # type: ignore[arg-type]
    key = lambda b: (b.open_time, b.open, b.high, b.low, b.close, b.volume)  # noqa: E731
    report.bars_expected = len(want)
    report.bars_wrong = len(set(map(key, want)) ^ set(map(key, stored)))
    forecasts = query_forecasts(db, SERIES, since=HISTORY_END - timedelta(minutes=5), until=end,  # type: ignore[arg-type]
                                limit=None)
    per_bar = Counter(f.issued_at for f in forecasts)
    expected = {HISTORY_END - timedelta(minutes=5)} | {b.open_time for b in want}
    report.forecasts_expected = len(expected)
    report.forecasts_missing = sorted(expected - set(per_bar))
    report.bars_forecast_twice = sum(1 for n in per_bar.values() if n > 1)
    lines = [orjson.loads(x) for x in (work / "data" / "logs" / "forecasts.jsonl").read_text().splitlines()]
    logged = Counter((_t(ln["issued_at"]), ln["model_id"]) for ln in lines
                     if HISTORY_END - timedelta(minutes=5) <= _t(ln["issued_at"]) < end)
    in_db = {(f.issued_at, f.model_id) for f in forecasts}
    report.log_missing = len(in_db - set(logged))
    report.log_extra = len(set(logged) - in_db)
    report.log_duplicated = sum(1 for n in logged.values() if n > 1)
    for mark in restarts:  # the first bar that closed after each restart
        first = next((b.open_time for b in want if b.open_time > mark), None)
        if first is not None and first not in per_bar:
            report.first_bar_unforecast.append(first)
