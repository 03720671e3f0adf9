"""The websocket shell, REST backfill and ingest restart, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from daemon.config import FeedsConfig
from daemon.feeds import PROTOCOLS
from daemon.feeds.backfill import BackfillError, RestClient, fetch_candles
from daemon.feeds.connection import FeedConnection, FeedEvent, backoff_delay
from daemon.feeds.simulator import ExchangeSimulator, Faults, SimSeries, synth_trades
from daemon.ingest import FeedSpec, Ingest
from db.bars import read_bars
from db.engine import Database
from db.records import Bar, SeriesKey

START = datetime(2021, 1, 4, 0, 0, tzinfo=UTC)
OPTS = FeedsConfig(
    grace_s=2.0,
    late_allowance_s=86_400.0,
    stall_timeout_s=0.5,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    backoff_reset_after_s=0.3,
    ping_interval_s=5.0,
    ping_timeout_s=5.0,
    queue_size=1000,
    backfill_days=0.0,
    rest_timeout_s=5.0,
)


def walk(n: int, symbol: str = "BTC-USD", start: datetime = START, seed: int = 1) -> list[Bar]:
    rnd = random.Random(seed)
    price = Decimal("30000.00")
    out = []
    for i in range(n):
        o = price
        c = (o + Decimal(rnd.randint(-5000, 5000)) / 100).quantize(Decimal("0.01"))
        h, lo = max(o, c) + Decimal("1.5"), min(o, c) - Decimal("0.25")
        v = Decimal(rnd.randint(0, 10**9)).scaleb(-8) if i % 17 else Decimal(0)
        if v == 0:
            o = h = lo = c = price
        out.append(Bar("x", symbol, "5m", start + timedelta(minutes=5 * i), o, h, lo, c, v))
        price = c
    return out


async def collect(conn: FeedConnection, until: int, kinds: set[str]) -> list[FeedEvent]:
    task = asyncio.create_task(conn.run())
    events: list[FeedEvent] = []
    try:
        while sum(e.kind in kinds for e in events) < until:
            events.append(await asyncio.wait_for(conn.queue.get(), 20))
    finally:
        conn.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return events


def test_backoff_is_capped_jittered_and_never_zero() -> None:
    rnd = random.Random(3)
    delays = [backoff_delay(a, 1.0, 60.0, rnd) for a in range(40)]
    assert all(0.5 <= d <= 60.0 for d in delays)
    assert all(d >= 30.0 for d in delays[6:])  # capped: 2**6 > 60
    assert len({round(d, 6) for d in delays}) > 30  # jittered


def test_refused_connections_are_retried_and_subscription_resent() -> None:
    async def main() -> tuple[list[FeedEvent], ExchangeSimulator, FeedConnection]:
        sim = ExchangeSimulator(
            PROTOCOLS["coinbase"],
            [SimSeries("BTC-USD", tuple(walk(50)))],
            speed=3000,
            faults=Faults(refuse=3, drop_every_s=0.2),
            heartbeat_s=0.05,
        )
        async with sim:
            conn = FeedConnection(PROTOCOLS["coinbase"], ["BTC-USD"], OPTS, url=sim.ws_url)
            events = await collect(conn, 3, {"up"})
        return events, sim, conn

    events, _sim, conn = asyncio.run(main())
    assert conn.failures >= 3 + 2  # three refusals, then two drops
    # what `status` shows: every refused attempt is a reconnect, not just connections that got through
    assert conn.reconnects == conn.failures >= 5 and conn.connects <= conn.reconnects
    assert [e.kind for e in events if e.kind != "message"][:3] == ["up", "down", "up"]
    parsed = [PROTOCOLS["coinbase"].parse(e.text).kind for e in events if e.kind == "message"]
    assert parsed.count("ack") >= 2 and "heartbeat" in parsed  # resubscribed after each reconnect


def test_stalled_stream_is_detected_and_reconnected() -> None:
    async def main() -> FeedConnection:
        sim = ExchangeSimulator(
            PROTOCOLS["binance"],
            [SimSeries("BTC-USDT", tuple(walk(50, "BTC-USDT")))],
            speed=30,
            faults=Faults(stall_after_s=0.1),
        )
        async with sim:
            conn = FeedConnection(PROTOCOLS["binance"], ["BTCUSDT"], replace(OPTS, stall_timeout_s=0.3), url=sim.ws_url)
            events = await collect(conn, 2, {"down"})
        assert all("stalled" in e.reason for e in events if e.kind == "down")
        return conn

    assert asyncio.run(main()).connects >= 2


@pytest.mark.parametrize("exchange", ["bitstamp", "poloniex"])
def test_client_heartbeats_are_sent_and_answered(exchange: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proto = PROTOCOLS[exchange]
    monkeypatch.setattr(type(proto), "client_heartbeat_s", 0.05)

    async def main() -> list[str]:
        sim = ExchangeSimulator(proto, [SimSeries("BTC-USD", tuple(walk(5)))], speed=1)
        async with sim:
            conn = FeedConnection(
                proto, [proto.native_symbol("BTC-USD")], replace(OPTS, stall_timeout_s=5), url=sim.ws_url
            )
            events = await collect(conn, 4, {"message"})
        return [proto.parse(e.text).kind for e in events if e.kind == "message"]

    kinds = asyncio.run(main())
    assert kinds.count("heartbeat") >= 3


def test_consumer_behind_resyncs_instead_of_growing() -> None:
    async def main() -> FeedConnection:
        sim = ExchangeSimulator(
            PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(walk(400, "BTC-USDT")))], speed=200_000
        )
        async with sim:
            q: asyncio.Queue[FeedEvent] = asyncio.Queue(20)
            conn = FeedConnection(
                PROTOCOLS["binance"], ["BTCUSDT"], replace(OPTS, queue_size=20), url=sim.ws_url, queue=q
            )
            task = asyncio.create_task(conn.run())
            await asyncio.sleep(0.5)  # nobody reads: the queue fills, the feed gives up the connection
            assert q.full()
            downs: list[Any] = []
            while not downs:  # now read: the 'down' event waited for room, it was not dropped
                e = await asyncio.wait_for(q.get(), 5)
                if e.kind == "down":
                    downs.append(e)
            conn.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert downs and "queue full" in downs[0].reason
        return conn

    conn = asyncio.run(main())
    assert conn.resyncs >= 1


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_rest_backfill_pages_and_is_exact(exchange: str) -> None:
    proto = PROTOCOLS[exchange]
    bars = walk(1600 if exchange != "kraken" else 700)

    async def main() -> list:
        sim = ExchangeSimulator(
            proto,
            [SimSeries("BTC-USD", tuple(bars))],
            speed=1,
            start=(bars[-1].open_time + timedelta(minutes=10)).timestamp(),
        )
        async with sim:
            client = RestClient(proto, sim.rest_url, min_interval_s=0)
            start = int(bars[0].open_time.timestamp())
            got = await fetch_candles(client, proto.native_symbol("BTC-USD"), 300, start, start + 300 * len(bars))
            assert client.requests >= len(bars) // proto.max_candles
            with pytest.raises(BackfillError):
                await RestClient(proto, sim.rest_url + "/nowhere", min_interval_s=0, attempts=1).get("/x")
            return got

    got = asyncio.run(main())
    assert [(c.open, c.high, c.low, c.close, c.volume) for c in got] == [
        (b.open, b.high, b.low, b.close, b.volume) for b in bars
    ]


def _run_ingest(
    db: Database,
    bars: list[Bar],
    sim_start: datetime,
    until: datetime,
    *,
    clock_mode: str = "sim",
    protocol: str = "coinbase",
    wait_s: float = 60,
) -> Ingest:
    series = SeriesKey(protocol, "BTC-USD", "5m")

    async def main() -> Ingest:
        sim = ExchangeSimulator(
            PROTOCOLS[protocol],
            [SimSeries("BTC-USD", tuple(bars))],
            speed=20_000,
            start=sim_start.timestamp(),
            heartbeat_s=0.01,
        )
        async with sim:
            ingest = Ingest(
                [FeedSpec(protocol, (series,), sim.ws_url, sim.rest_url)],
                replace(OPTS, stall_timeout_s=3.0, backfill_days=2.0),
                database=db,
                clock=sim.clock.now if clock_mode == "sim" else None,
                rest_min_interval_s=0,
                tick_s=0.02,
                rest_poll_s=0.05,
            )
            updates = ingest.updates()
            task = asyncio.create_task(ingest.run())

            async def wait() -> None:
                async for u in updates:
                    if u.bar.open_time >= until:
                        return

            try:
                await asyncio.wait_for(wait(), wait_s)
            except TimeoutError:
                pass  # the caller's assertions say what is missing
            finally:
                ingest.stop()
                await task
        return ingest

    return asyncio.run(main())


def test_restart_resumes_from_stored_bars_without_duplicates(tmp_db: Database) -> None:
    bars = walk(600)
    series = SeriesKey("coinbase", "BTC-USD", "5m")
    expected = [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in bars]
    # first run: history by REST, then live up to bar 300
    _run_ingest(tmp_db, bars, bars[200].open_time, bars[300].open_time)
    first = read_bars(tmp_db, series)
    assert len(first) >= 300
    # the daemon was down for a while; a restart continues after the latest stored bar
    second = _run_ingest(tmp_db, bars, bars[420].open_time, bars[-1].open_time)
    stored = read_bars(tmp_db, series)
    assert [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in stored] == expected
    assert second.stats()["coinbase"]["backfilled_bars"] < 200  # resumed, not refetched from scratch


@pytest.mark.parametrize("protocol", ["coinbase", "binance"])
def test_feed_clock_mode_closes_bars_from_feed_times(tmp_db: Database, protocol: str) -> None:
    """clock=None: bars close on later trades and timed heartbeats (Coinbase), not the wall clock.

    At the end of its data the simulator goes down for good: the final bars (which no later trade
    closes, and Binance has no timed heartbeats) are stored too, from the exchange's REST candles
    while the feed is down - before, the last bars of such a run were never stored.
    """
    bars = walk(300)
    series = SeriesKey(protocol, "BTC-USD", "5m")
    _run_ingest(tmp_db, bars, bars[100].open_time, bars[-1].open_time, clock_mode="feed", protocol=protocol)
    stored = read_bars(tmp_db, series)
    got = [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in stored]
    want = [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in bars]
    assert got == want


def test_synthetic_trades_reproduce_volume_and_zero_volume_rules() -> None:
    bars = walk(60)
    trades = list(synth_trades("coinbase", "BTC-USD", "BTC-USD", bars))
    assert all(t.size >= 0 for t in trades)
    first_flat = next(i for i, b in enumerate(bars) if b.volume == 0 and i > 0)
    t0 = int(bars[first_flat].open_time.timestamp()) * 1_000_000
    assert not [t for t in trades if t0 <= t.time_us < t0 + 300_000_000]  # real flat bar: no trades


def _limit_sqlite_pages(db: Database, extra_pages: int | None) -> None:
    """A real 'disk full': SQLite's max_page_count caps the file (writes fail with SQLITE_FULL)."""
    from sqlalchemy import event, text

    with db.engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()
    limit = 2**31 - 2 if extra_pages is None else pages + extra_pages

    def on_connect(dbapi_conn: object, _record: object) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {limit}")  # type: ignore[attr-defined]

    event.listen(db.engine, "connect", on_connect)
    db.engine.dispose()


def test_backfill_commits_page_by_page_and_resumes_after_a_full_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from db.engine import open_database
    from db.errors import BarcastError

    bars = walk(1500)
    series = SeriesKey("coinbase", "BTC-USD", "5m")
    want = [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in bars]

    async def run(db: Database) -> Ingest:
        sim = ExchangeSimulator(
            PROTOCOLS["coinbase"], [SimSeries("BTC-USD", tuple(bars))], speed=20_000,
            start=bars[1450].open_time.timestamp(), heartbeat_s=0.01,
        )
        async with sim:
            ingest = Ingest(
                [FeedSpec("coinbase", (series,), sim.ws_url, sim.rest_url)],
                replace(OPTS, stall_timeout_s=3.0, backfill_days=6.0),
                database=db, clock=sim.clock.now, rest_min_interval_s=0, tick_s=0.02, rest_poll_s=0.05,
            )
            updates = ingest.updates()
            task = asyncio.create_task(ingest.run())

            async def wait() -> None:
                async for u in updates:
                    if u.bar.open_time >= bars[-1].open_time:
                        return

            try:
                await asyncio.wait_for(wait(), 60)
            except TimeoutError:
                pass
            finally:
                ingest.stop()
                await task
        return ingest

    path = tmp_path / "full.db"
    db = open_database(f"sqlite:///{path}")
    _limit_sqlite_pages(db, 25)  # room for a few pages of candles, not for 1450 bars
    with pytest.raises(BarcastError, match="full"):
        asyncio.run(run(db))
    first = [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in read_bars(db, series)]
    db.close()
    # the pages that fitted were committed (before: all-or-nothing, so nothing was stored)
    assert 300 <= len(first) < 1450 and first == want[: len(first)]

    db = open_database(f"sqlite:///{path}")  # space freed: a restart resumes after the stored pages
    second = asyncio.run(run(db))
    stored = [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in read_bars(db, series)]
    db.close()
    assert stored == want
    # it fetched what was missing (plus the interval in progress at each subscription), not everything
    assert second.stats()["coinbase"]["backfilled_bars"] <= 1450 - len(first) + 5
