"""Faults under a running daemon: another process holds SQLite's write lock past the busy
timeout; PostgreSQL is restarted (a throw-away server of the test's own). The daemon holds its
data and retries, the API keeps answering, and afterwards nothing is missing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from daemon.config import load_config
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.live.notify import Notifier
from daemon.live.service import Service
from db.bars import read_bars
from db.engine import SQLITE_BUSY_TIMEOUT_MS, open_database
from db.forecasts import query_forecasts
from db.records import Bar
from db.schema import forecast_scores
from tests.daemon.livehelp import SERIES, SIM_START, config_text, real_bars, seed_history

pytestmark = pytest.mark.slow

HISTORY_END = datetime(2020, 12, 20, tzinfo=SIM_START.tzinfo)
END = SIM_START + timedelta(hours=3)

HOLDER = r"""
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
print("released", flush=True)
"""

Fault = Callable[[Service, httpx.AsyncClient], Awaitable[dict[str, Any]]]


@contextlib.asynccontextmanager
async def _daemon(tmp_path: Path, db_url: str, played: list[Bar], speed: float) -> AsyncIterator[Service]:
    """A real daemon (shared mode) on `db_url`, fed by a simulator replaying `played`; stopped
    (and awaited) on exit."""
    sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(played))], speed=speed,
                            start=SIM_START.timestamp(), heartbeat_s=0.05)
    async with sim:
        cfg = tmp_path / "barcast.toml"
        cfg.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url)
                       + "\n[cluster]\nheartbeat_s = 0.5\nlease_ttl_s = 30.0\n")
        svc = Service(load_config(cfg, env={}), clock=sim.clock.now, notifier=Notifier(""))
        run = asyncio.create_task(svc.run())
        try:
            yield svc
        finally:
            svc.stop_event.set()
            await asyncio.wait_for(run, 60)


def _run(shared_dir: Path, tmp_path: Path, db_url: str, fault: Fault, speed: float) -> dict[str, Any]:
    played = real_bars(shared_dir, END + timedelta(hours=3))
    seed_history(db_url, played, HISTORY_END)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with _daemon(tmp_path, db_url, played, speed) as svc:
            while not svc.ready:
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=svc.api.url, timeout=30) as client:  # type: ignore[union-attr]
                while not svc.pipeline.stats.forecasts:  # type: ignore[union-attr]
                    await asyncio.sleep(0.1)
                seen.update(await fault(svc, client))
                while (svc.pipeline.series[SERIES].last_forecast or HISTORY_END) < END:  # type: ignore[union-attr]
                    await asyncio.sleep(0.1)

    asyncio.run(main())
    db = open_database(db_url)
    stored = read_bars(db, SERIES, since=HISTORY_END, until=END)
    want = [b for b in played if HISTORY_END <= b.open_time < END]
    seen["bars_ok"] = [(b.open_time, b.close, b.volume) for b in stored] == [
        (b.open_time, b.close, b.volume) for b in want]
    per_bar = Counter(f.issued_at for f in query_forecasts(db, SERIES, since=HISTORY_END, until=END))
    seen["forecast_missing"] = sorted({b.open_time for b in want} - set(per_bar))
    seen["forecast_twice"] = [t for t, n in per_bar.items() if n > 1]
    # every step whose target bar closed before END is scored (scores are writes too)
    due = END - SERIES.step * 16
    with db.engine.connect() as conn:
        scored = conn.execute(select(func.count()).select_from(forecast_scores).where(
            forecast_scores.c.issued_at >= HISTORY_END, forecast_scores.c.issued_at < due)).scalar_one()
    seen["scores_missing"] = 16 * sum(1 for t in per_bar if t < due) - scored
    db.close()
    return seen


async def _answers_while(client: httpx.AsyncClient, done: Callable[[], bool]) -> list[int]:
    codes = []
    while not done():
        for path in ("/status", "/forecasts", "/health"):
            codes.append((await client.get(path, params={"limit": 1} if path == "/forecasts" else None)).status_code)
        await asyncio.sleep(0.5)
    return codes


def test_sqlite_write_lock_held_past_the_busy_timeout(shared_dir: Path, tmp_path: Path) -> None:
    db_path = tmp_path / "barcast.db"
    hold_s = SQLITE_BUSY_TIMEOUT_MS / 1000 + 4

    async def lock(svc: Service, client: httpx.AsyncClient) -> dict[str, Any]:
        holder = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, str(db_path), str(hold_s),
                                                      stdout=asyncio.subprocess.PIPE)
        assert holder.stdout is not None
        stdout = holder.stdout
        assert (await holder.stdout.readline()).strip() == b"locked"
        before = svc.pipeline.stats.forecasts  # type: ignore[union-attr]
        codes = await _answers_while(client, lambda: holder.returncode is not None or stdout.at_eof())
        await holder.wait()
        return {"codes": codes, "forecasts_during": svc.pipeline.stats.forecasts - before}  # type: ignore[union-attr]

    seen = _run(shared_dir, tmp_path, f"sqlite:///{db_path}", lock, speed=300)
    assert seen["codes"] and set(seen["codes"]) <= {200, 503}, seen["codes"]  # answered throughout
    assert seen["codes"].count(200) >= len(seen["codes"]) // 2
    assert seen["bars_ok"]
    assert seen["forecast_missing"] == [] and seen["forecast_twice"] == []
    assert seen["scores_missing"] == 0


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*args: str) -> None:
    cmd = list(args)
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


@pytest.fixture
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A throw-away PostgreSQL server (initdb + pg_ctl) on its own port and data directory."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not installed")
    base = Path(f"/tmp/barcast-pg-{os.getpid()}-{_free_port()}")
    base.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")

    def ctl(*args: str) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "server.log"),
                     "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", *args)

    ctl("start")
    _as_postgres(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "barcast")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/barcast", ctl
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # a test that failed with it stopped
            ctl("stop", "-m", "immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
def test_postgresql_restarted_under_a_running_daemon(shared_dir: Path, tmp_path: Path, own_postgres: Any) -> None:
    url, ctl = own_postgres

    async def restart(svc: Service, client: httpx.AsyncClient) -> dict[str, Any]:
        before = svc.pipeline.stats.forecasts  # type: ignore[union-attr]
        await asyncio.to_thread(ctl, "stop", "-m", "fast")
        await asyncio.sleep(3)  # down for a while: bars close meanwhile
        health = (await client.get("/health")).json()
        await asyncio.to_thread(ctl, "start")
        return {"health_down": health, "forecasts_before": before}

    seen = _run(shared_dir, tmp_path, url, restart, speed=300)
    assert seen["health_down"]["ready"] is False and "database unreachable" in str(seen["health_down"]["reasons"])
    assert seen["bars_ok"]
    assert seen["forecast_missing"] == [] and seen["forecast_twice"] == []
    assert seen["scores_missing"] == 0


@pytest.mark.postgres
def test_postgresql_down_while_the_ingest_resumes_is_waited_out(
    shared_dir: Path, own_postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A start (or a series gained in cluster mode) first reads the stored bars and gaps to resume
    from. PostgreSQL going away just then (CI saw it: the restart above, on a loaded machine,
    landed in those reads) made the ingest fail and the service stop. The reads now wait the
    server out as writes do, and the ingest resumes after the stored bars once it is back."""
    import logging

    from daemon.config import FeedsConfig
    from daemon.ingest import FeedSpec, Ingest

    url, ctl = own_postgres
    played = real_bars(shared_dir, END)
    seed_history(url, played, HISTORY_END)
    db = open_database(url)
    caplog.set_level(logging.INFO)

    async def main() -> None:
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(played))], speed=300,
                                start=SIM_START.timestamp(), heartbeat_s=0.05)
        async with sim:
            await asyncio.to_thread(ctl, "stop", "-m", "fast")
            ingest = Ingest([FeedSpec("binance", (SERIES,), sim.ws_url, sim.rest_url)], FeedsConfig(), database=db,
                            clock=sim.clock.now, rest_min_interval_s=0.0)
            task = asyncio.create_task(ingest.run())
            try:
                await asyncio.sleep(1.0)
                assert not task.done(), task  # before: the first read's error ended the run
                await asyncio.to_thread(ctl, "start")
                started = asyncio.create_task(ingest.started.wait())
                await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
                assert ingest.started.is_set() and not task.done(), task
            finally:
                ingest.stop()
                await asyncio.wait_for(task, 30)

    try:
        asyncio.run(main())
    finally:
        db.close()
    waited = [r for r in caplog.records if r.getMessage().startswith("database unavailable")]
    assert waited and {getattr(r, "what", None) for r in waited} == {"restore"}, waited
    resumed = [r for r in caplog.records if r.getMessage() == "resuming after stored bars"]
    latest = max(b.open_time for b in played if b.open_time < HISTORY_END)
    assert [getattr(r, "latest", None) for r in resumed] == [latest.isoformat()]


@pytest.mark.postgres
def test_postgresql_down_while_a_gained_series_is_adopted_is_waited_out(
    shared_dir: Path, tmp_path: Path, own_postgres: Any
) -> None:
    """Cluster mode hands each ownership change to `Service._ownership_changed` in a task of its
    own; adopting a series gained reads its window and model from the database. PostgreSQL away
    just then made the task fail and nothing applied the change again: the daemon kept the lease
    of a series it neither served nor ingested (no bars, no forecasts from anyone). Now each step
    waits the server out. A real rebalance is hard to time against a server stop, so the change
    is applied as membership hands it over: `_ownership_changed` called on the running service
    (hand the series on, stop PostgreSQL, gain it back, start PostgreSQL a second later)."""
    url, ctl = own_postgres

    async def regain(svc: Service, client: httpx.AsyncClient) -> dict[str, Any]:
        pipe = svc.pipeline
        assert pipe is not None
        await svc._ownership_changed(set(), {SERIES})
        assert SERIES not in pipe.owned and SERIES not in svc._connected()  # no feed ingests it
        await asyncio.to_thread(ctl, "stop", "-m", "fast")
        change = asyncio.create_task(svc._ownership_changed({SERIES}, set()))
        await asyncio.sleep(1.0)
        waiting = not change.done()
        await asyncio.to_thread(ctl, "start")
        await asyncio.wait({change}, timeout=120)
        assert change.done() and change.exception() is None, change  # before: the database's error
        assert waiting
        assert SERIES in pipe.owned and pipe.series[SERIES].window.ready
        assert SERIES in svc._connected()  # a feed ingests it again
        return {}

    seen = _run(shared_dir, tmp_path, url, regain, speed=300)  # forecasts resume: it waits for END's
    assert seen["bars_ok"]
    assert seen["forecast_missing"] == [] and seen["forecast_twice"] == []
    assert seen["scores_missing"] == 0


@pytest.mark.postgres
def test_a_stop_while_a_gained_series_waits_for_postgresql_is_not_held_up(
    shared_dir: Path, tmp_path: Path, own_postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The wait above holds the ownership lock, which the shutdown takes too: a stop during it
    gives the wait up (the change fails as before) instead of running into the shutdown timeout."""
    import logging

    url, ctl = own_postgres
    played = real_bars(shared_dir, END)
    seed_history(url, played, HISTORY_END)
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with _daemon(tmp_path, url, played, 300) as svc:
            while not (svc.ready and SERIES in svc.pipeline.owned):  # type: ignore[union-attr]
                await asyncio.sleep(0.05)  # shared mode: claimed after a few heartbeats
            await svc._ownership_changed(set(), {SERIES})
            await asyncio.to_thread(ctl, "stop", "-m", "fast")
            change = asyncio.create_task(svc._ownership_changed({SERIES}, set()))
            await asyncio.sleep(1.0)
            assert not change.done(), change
        assert change.done() and "Connection refused" in str(change.exception())

    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert "stopped" in messages and "shutdown timed out; abandoning what is left" not in messages
