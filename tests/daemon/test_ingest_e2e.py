"""End to end: exchange simulator on real Binance bars -> websocket + REST -> ingest -> SQLite.

The stored bars must equal the CSV rows exactly (Decimal O, H, L, C, V), across a real gap in
the data (2020-12-21 14:10..17:55, preceded by two real zero-volume bars), with and without the
simulator dropping the connection every few tenths of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import delete

from daemon.bars import Aggregator
from daemon.config import FeedsConfig
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, Faults, SimSeries, synth_trades
from daemon.ingest import BarsCallback, FeedSpec, Ingest
from db.bars import read_bars, upsert_bars
from db.csvbars import read_bars_csv
from db.engine import Database
from db.gaps import FeedGap, list_gaps, record_gap
from db.records import Bar, SeriesKey, decimal_text, interval_seconds, to_unix, utc_from_unix
from db.schema import bars as bars_t
from db.schema import series_is

pytestmark = pytest.mark.slow

SERIES = SeriesKey("binance", "BTC-USDT", "5m")
FIRST = datetime(2020, 12, 20, 0, 0, tzinfo=UTC)
SIM_START = datetime(2020, 12, 20, 12, 0, tzinfo=UTC)  # before this: history served by REST only
END = datetime(2020, 12, 22, 0, 0, tzinfo=UTC)
SPEED = 40_000.0
#: Wall seconds without a bar update after the last bar's first one: the run is over.
QUIET_S = 0.5

FAST = FeedsConfig(
    grace_s=2.0,
    late_allowance_s=86_400.0,
    stall_timeout_s=3.0,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    backoff_reset_after_s=1.0,
    ping_interval_s=5.0,
    ping_timeout_s=5.0,
    queue_size=100_000,
    backfill_days=1.0,
    rest_timeout_s=5.0,
)


@pytest.fixture(scope="module")
def csv_bars(shared_dir: Path) -> list[Bar]:
    bars = read_bars_csv(
        shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv",
        exchange="binance",
        symbol="BTC-USDT",
        interval="5m",
    )
    out = [b for b in bars if FIRST <= b.open_time < END]
    times = [to_unix(b.open_time) for b in out]
    assert any(b - a > 300 for a, b in itertools.pairwise(times)), "slice must contain a real gap"
    assert any(b.volume == 0 for b in out), "slice must contain zero-volume bars"
    return out


def values(bars: list[Bar]) -> list[tuple]:
    return [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in bars]


async def run_sim_ingest(
    db: Database,
    bars: list[Bar],
    faults: Faults | None,
    protocol: str = "binance",
    series: SeriesKey = SERIES,
    trades_per_bar: int = 4,
    on_bars: BarsCallback | None = None,
    options: FeedsConfig = FAST,
    tick_s: float = 0.02,
    trades_per_frame: int = 1,
    sim_start: datetime = SIM_START,
) -> Ingest:
    sim = simulator(bars, faults, protocol, series, trades_per_bar, trades_per_frame, sim_start)
    async with sim:
        return await ingest_until(sim, db, protocol, series, bars[-1].open_time, on_bars=on_bars, options=options,
                                  tick_s=tick_s)


def simulator(
    bars: list[Bar],
    faults: Faults | None = None,
    protocol: str = "binance",
    series: SeriesKey = SERIES,
    trades_per_bar: int = 4,
    trades_per_frame: int = 1,
    sim_start: datetime = SIM_START,
) -> ExchangeSimulator:
    return ExchangeSimulator(
        PROTOCOLS[protocol],
        [SimSeries(series.symbol, tuple(bars))],
        speed=SPEED,
        start=sim_start.timestamp() if bars[0].open_time < sim_start else None,
        heartbeat_s=0.05,
        faults=faults,
        trades_per_bar=trades_per_bar,
        trades_per_frame=trades_per_frame,
    )


async def ingest_until(
    sim: ExchangeSimulator,
    db: Database,
    protocol: str,
    series: SeriesKey,
    last: datetime,
    *,
    on_bars: BarsCallback | None = None,
    options: FeedsConfig = FAST,
    tick_s: float = 0.02,
    quiet: bool = True,
    rest_url: str | None = None,
) -> Ingest:
    """Ingest from the running `sim` into `db` until the bar opening at `last` is stored (then,
    if `quiet`, until no update came for `QUIET_S`), and stop: as a daemon run would.
    `rest_url`: REST candles from there instead of the simulator."""
    ingest = Ingest(
        [FeedSpec(protocol, (series,), sim.ws_url, rest_url or sim.rest_url)],
        options,
        database=db,
        clock=sim.clock.now,
        rest_min_interval_s=0.0,
        backfill_retry_s=0.05,
        tick_s=tick_s,
        rest_poll_s=0.05,
        on_bars=on_bars,
    )
    updates = ingest.updates()
    task = asyncio.create_task(ingest.run())

    async def until_last() -> None:
        async for u in updates:
            if u.bar.open_time >= last:
                break
        if not quiet:
            return
        # On a loaded machine the simulator's clock can close the last bar while some of its
        # trades still wait in the queue; they amend it as they are applied. Stop once quiet.
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            while True:
                await asyncio.wait_for(anext(updates), timeout=QUIET_S)

    try:
        await asyncio.wait_for(until_last(), timeout=60)
    except TimeoutError:
        pass  # the comparison below shows what is missing
    finally:
        ingest.stop()
        await task
    return ingest


def test_simulator_to_database_reproduces_real_bars(tmp_db: Database, csv_bars: list[Bar]) -> None:
    ingest = asyncio.run(run_sim_ingest(tmp_db, csv_bars, None))
    stored = read_bars(tmp_db, SERIES)
    assert values(stored) == values(csv_bars)
    sources = Counter(b.source for b in stored)
    # history before the simulator's start, and the gap's aftermath, come from REST; the rest is live
    assert sources["live"] > 250 and sources["backfill"] >= 144, sources
    stats = ingest.stats()["binance"]
    assert stats["malformed"] == {} and stats["messages"]["trade"] > 1000


def test_reconnects_every_few_tenths_are_healed_by_backfill(tmp_db: Database, csv_bars: list[Bar]) -> None:
    ingest = asyncio.run(run_sim_ingest(tmp_db, csv_bars, Faults(drop_every_s=0.25, malformed_every=97)))
    stored = read_bars(tmp_db, SERIES)
    assert values(stored) == values(csv_bars)
    stats = ingest.stats()["binance"]
    assert stats["connects"] >= 5, stats
    assert sum(stats["malformed"].values()) > 0  # injected garbage was counted, not raised
    assert Counter(b.source for b in stored)["live"] > 100


def test_dropped_connections_are_recorded_as_gaps_filled_by_backfill(any_db: Database, csv_bars: list[Bar]) -> None:
    """Every reconnect records the bars the live stream missed in `feed_gaps` and, once REST
    has filled the range, how many bars it holds: every backfilled bar after the stream first
    went live lies in a recorded gap, each filled gap holds exactly the bars stored in its range,
    and the stored bars are still the CSV's. On SQLite and PostgreSQL."""
    ingest = asyncio.run(run_sim_ingest(any_db, csv_bars, Faults(drop_every_s=0.25)))
    stored = read_bars(any_db, SERIES)
    assert values(stored) == values(csv_bars)
    connects = ingest.stats()["binance"]["connects"]
    gaps = sorted(list_gaps(any_db, [SERIES]), key=lambda g: g.start)
    assert 2 <= len(gaps) <= connects - 1, (len(gaps), connects)
    step = interval_seconds(SERIES.interval)
    for g, nxt in itertools.pairwise(gaps):
        assert g.end <= nxt.start, (g, nxt)  # one outage, one gap
    for g in gaps:
        assert to_unix(g.start) % step == 0 and g.start < g.end and g.bars_missed >= 1, g
    # the run stops as soon as the last bar is stored: only the newest gap may still be filling
    for g in gaps[:-1]:
        assert g.filled_at is not None, g
    assert sum(g.bars_filled for g in gaps) >= len(gaps) - 1
    for g in (g for g in gaps if g.filled_at is not None):
        held = [b for b in stored if g.start <= b.open_time < g.end]
        assert g.bars_filled == len(held) == sum(g.start <= b.open_time < g.end for b in csv_bars), g
    # between the first and the last live bar, what REST stored was a reconnect's gap (after the
    # last one, the feed may be down with no resumption to close the range: no gap yet)
    live = [b.open_time for b in stored if b.source == "live"]
    outside = [b.open_time for b in stored if b.source == "backfill" and min(live) <= b.open_time <= max(live)
               and not any(g.start <= b.open_time < g.end for g in gaps)]
    assert not outside, outside


def test_a_restart_records_the_bars_missed_while_down_as_one_gap(any_db: Database, csv_bars: list[Bar]) -> None:
    """A run, a stop, two hours of trades while the daemon is down, a restart on the same
    database: the outage is one gap, from the end of the bars the first run stored to the first
    bar the second built from trades, filled with exactly the bars stored in it, and the bars
    are still the CSV's. On SQLite and PostgreSQL."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 21, 8, 0, tzinfo=UTC)]  # before the outage
    stop_after = datetime(2020, 12, 20, 18, 0, tzinfo=UTC)
    down_until = datetime(2020, 12, 20, 20, 0, tzinfo=UTC).timestamp()

    async def run() -> Bar:
        async with simulator(bars) as sim:
            await ingest_until(sim, any_db, "binance", SERIES, stop_after, quiet=False)
            newest = read_bars(any_db, SERIES)[-1]
            while sim.clock.now() < down_until:  # the exchange trades on while the daemon is down
                await asyncio.sleep(0.01)
            await ingest_until(sim, any_db, "binance", SERIES, bars[-1].open_time)
        return newest

    newest = asyncio.run(run())
    assert newest.open_time >= stop_after and newest.source == "live"
    stored = read_bars(any_db, SERIES)
    assert values(stored) == values(bars)
    (gap,) = list_gaps(any_db, [SERIES])
    assert gap.start == newest.open_time + SERIES.step
    # the second run built bars from trades from the gap's end on, never inside it
    live = [b.open_time for b in stored if b.source == "live" and b.open_time >= gap.start]
    assert live and gap.end == min(live)
    assert gap.end.timestamp() > down_until and gap.bars_missed >= 24, gap
    held = [b for b in stored if gap.start <= b.open_time < gap.end]
    assert gap.filled_at is not None and gap.bars_filled == len(held) == gap.bars_missed, gap
    assert all(b.source == "backfill" for b in held)


def short_of_its_last_trade(bar: Bar) -> Bar:
    """`bar` as the aggregator builds it from the simulator's trades of it but the last one: a
    bar the clock closed while that trade was still unread."""
    trades = list(synth_trades(bar.exchange, bar.symbol, PROTOCOLS[bar.exchange].native_symbol(bar.symbol), [bar]))
    agg = Aggregator(bar.series)
    agg.resume(to_unix(bar.open_time) * 1_000_000)  # observed from the bar's open
    for t in trades[:-1]:
        assert not agg.add(t)
    (update,) = agg.finish()
    return update.bar


def texts(bars: list[Bar]) -> list[tuple]:
    return [(b.open_time, *map(decimal_text, (b.open, b.high, b.low, b.close, b.volume))) for b in bars]


def test_a_restart_amends_the_newest_stored_bar_a_late_trade_missed(any_db: Database, csv_bars: list[Bar]) -> None:
    """The clock closed the newest stored bar while one of its trades was still unread, and the
    daemon stopped before that trade amended it. The restart fetches that bar from REST again
    (as a reconnect fetches what it cannot prove complete): the stored bar is the exchange's,
    text for text, and it is no part of the restart's gap. On SQLite and PostgreSQL."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)]
    truth = {b.open_time: b for b in bars}
    stop_after = datetime(2020, 12, 20, 16, 0, tzinfo=UTC)

    async def run() -> tuple[Bar, Bar]:
        async with simulator(bars) as sim:
            await ingest_until(sim, any_db, "binance", SERIES, stop_after, quiet=False)
            newest = read_bars(any_db, SERIES)[-1]
            short = replace(short_of_its_last_trade(truth[newest.open_time]), source="live")
            await asyncio.to_thread(upsert_bars, any_db, [short])  # as the first run left it
            await ingest_until(sim, any_db, "binance", SERIES, bars[-1].open_time)
        return newest, short

    newest, short = asyncio.run(run())
    assert newest.source == "live" and newest.open_time >= stop_after
    assert texts([short]) != texts([truth[newest.open_time]])  # one trade short: close and volume differ
    stored = read_bars(any_db, SERIES)
    assert texts(stored) == texts(bars)
    (gap,) = list_gaps(any_db, [SERIES])
    assert gap.start == newest.open_time + SERIES.step, gap  # the amended bar lost no trades: not a gap


T = TypeVar("T")
STEP_S = interval_seconds(SERIES.interval)


def restart_sim(bars: list[Bar]) -> ExchangeSimulator:
    """The restart tests' exchange: `bars` at 300x real time, so a run lasts a few bars."""
    return ExchangeSimulator(PROTOCOLS["binance"], [SimSeries(SERIES.symbol, tuple(bars))], speed=300.0,
                             start=SIM_START.timestamp(), heartbeat_s=0.05)


def bar_after(t: float, n: int = 1) -> datetime:
    """The open time of the n-th bar after the one the exchange clock `t` is in."""
    return utc_from_unix(int(t) - int(t) % STEP_S + n * STEP_S)


async def ingest_until_seen(sim: ExchangeSimulator, db: Database, seen: Callable[[], T | None]) -> T:
    """Ingest from `sim` into `db` until `seen()` answers (not None, not empty), then stop the
    run (a restart cut short); that answer."""
    ingest = Ingest([FeedSpec("binance", (SERIES,), sim.ws_url, sim.rest_url)], FAST, database=db,
                    clock=sim.clock.now, rest_min_interval_s=0.0, backfill_retry_s=0.05, tick_s=0.02,
                    rest_poll_s=0.05)
    task = asyncio.create_task(ingest.run())
    try:
        while not (answer := seen()):
            assert not task.done()
            await asyncio.sleep(0.005)
    finally:
        ingest.stop()
        await task
    return answer


def test_restarts_in_quick_succession_record_each_missed_bar_once(any_db: Database, csv_bars: list[Bar]) -> None:
    """A run, then a restart stopped again as soon as it recorded its gap (a crash loop, or a
    cluster handing a series on twice), then a third run. The second run's gap is not filled
    when it stops; the third fills it and records only the bars it newly missed. Before, it
    recorded them again from the first run's newest bar: a second row for the same bar, or an
    overlapping one that left the earlier row unfilled for good. On SQLite and PostgreSQL."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 21, 8, 0, tzinfo=UTC)]
    sim = restart_sim(bars)

    async def run() -> None:
        async with sim:
            await ingest_until(sim, any_db, "binance", SERIES, bar_after(sim.clock.now()), quiet=False)
            while sim.clock.now() % STEP_S > STEP_S / 3:  # the second run starts early in a bar
                await asyncio.sleep(0.005)
            await ingest_until_seen(sim, any_db, lambda: list_gaps(any_db, [SERIES]))  # its gap recorded
            (second,) = list_gaps(any_db, [SERIES])
            assert second.filled_at is None  # stopped before its backfill was stored
            await ingest_until(sim, any_db, "binance", SERIES, bar_after(sim.clock.now(), 2), quiet=False)

    asyncio.run(run())
    gaps = sorted(list_gaps(any_db, [SERIES]), key=lambda g: g.start)
    for g, nxt in itertools.pairwise(gaps):
        assert g.end <= nxt.start, gaps  # no bar in two gaps
    stored = read_bars(any_db, SERIES)
    for g in gaps:
        held = [b for b in stored if g.start <= b.open_time < g.end]
        assert g.filled_at is not None and g.bars_filled == len(held) == g.bars_missed, gaps
    assert values(stored) == values([b for b in bars if b.open_time <= stored[-1].open_time])


def test_a_gap_left_unfilled_by_a_stopped_run_is_filled_by_the_next(any_db: Database, csv_bars: list[Bar]) -> None:
    """A run records a gap and stores part of its backfill, then stops (a kill, or an ownership
    change restarting the ingest: both seen with two daemons on PostgreSQL) before the gap is
    marked filled. The next run resumes after the stored backfill and backfills the rest: the
    recorded gap is then filled, with every bar it missed, not left `--unfilled` for good while
    its bars are all stored."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 21, 8, 0, tzinfo=UTC)]
    stop_after = datetime(2020, 12, 20, 18, 0, tzinfo=UTC)
    down_until = datetime(2020, 12, 20, 20, 0, tzinfo=UTC).timestamp()

    async def run() -> tuple[datetime, datetime]:
        async with simulator(bars) as sim:
            await ingest_until(sim, any_db, "binance", SERIES, stop_after, quiet=False)
            start = read_bars(any_db, SERIES)[-1].open_time + SERIES.step
            while sim.clock.now() < down_until:
                await asyncio.sleep(0.01)
            # what the stopped run left: the gap up to its live start, half of its backfill stored
            end = start + 24 * SERIES.step
            record_gap(any_db, SERIES, start, end)
            half = [replace(b, source="backfill") for b in bars if start <= b.open_time < end - 12 * SERIES.step]
            upsert_bars(any_db, half)
            await ingest_until(sim, any_db, "binance", SERIES, bars[-1].open_time)
        return start, end

    start, end = asyncio.run(run())
    assert values(read_bars(any_db, SERIES)) == values(bars)
    gap, *later = sorted(list_gaps(any_db, [SERIES]), key=lambda g: g.start)
    assert (gap.start, gap.end) == (start, end)
    assert gap.filled_at is not None and gap.bars_filled == gap.bars_missed == 24, gap
    # the stopped run was live from `end` (its gap's end): what it missed after its stop is one
    # more gap, from there to this run's live start, filled too
    assert [g.start for g in later] == [end] and all(g.filled_at is not None for g in later), later
    assert later[0].bars_filled == later[0].bars_missed


def test_recorded_gaps_whose_bars_are_all_stored_are_filled_at_the_next_start(
        any_db: Database, csv_bars: list[Bar]) -> None:
    """A run stopped after its backfill stored a gap's last bar, before marking it (or a database
    written before that was finished by the next run): at the next start a recorded gap whose
    range holds every bar is marked filled; one still short of a bar (a failed backfill that live
    bars skipped) is fetched again from REST and filled then, with the bar it lacked."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)]
    first = datetime(2020, 12, 20, 13, 0, tzinfo=UTC)
    whole, short = (first, first + 6 * SERIES.step), (first + 12 * SERIES.step, first + 18 * SERIES.step)
    stored = [b for b in bars if b.open_time < datetime(2020, 12, 20, 16, 0, tzinfo=UTC) and b.open_time != short[0]]
    assert all(any(b.open_time == whole[0] + i * SERIES.step for b in stored) for i in range(6))
    upsert_bars(any_db, stored)
    for start, end in (whole, short):
        record_gap(any_db, SERIES, start, end)

    async def run() -> None:
        async with simulator(bars, sim_start=datetime(2020, 12, 20, 16, 0, tzinfo=UTC)) as sim:
            await ingest_until(sim, any_db, "binance", SERIES, bars[-1].open_time)

    asyncio.run(run())
    gaps = {(g.start, g.end): g for g in list_gaps(any_db, [SERIES])}
    assert gaps[whole].filled_at is not None and gaps[whole].bars_filled == 6, gaps[whole]
    assert gaps[short].filled_at is not None and gaps[short].bars_filled == 6, gaps[short]
    assert short[0] in {b.open_time for b in read_bars(any_db, SERIES)}


def closed_port() -> str:
    """A URL on 127.0.0.1 where nothing listens: REST that refuses every request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def assert_gaps_filled_and_bars_exact(db: Database, bars: list[Bar]) -> list[FeedGap]:
    """Every recorded gap of SERIES filled, with exactly the bars it missed, none in two gaps;
    the stored bars the CSV's up to the newest; returns the gaps, oldest first."""
    gaps = sorted(list_gaps(db, [SERIES]), key=lambda g: g.start)
    for g, nxt in itertools.pairwise(gaps):
        assert g.end <= nxt.start, gaps
    stored = read_bars(db, SERIES)
    for g in gaps:
        held = [b for b in stored if g.start <= b.open_time < g.end]
        assert g.filled_at is not None and g.bars_filled == len(held) == g.bars_missed, gaps
    assert values(stored) == values([b for b in bars if b.open_time <= stored[-1].open_time])
    return gaps


def test_a_restart_fills_a_gap_whose_backfill_failed_behind_later_live_bars(
    any_db: Database, csv_bars: list[Bar]
) -> None:
    """A run; a restart whose REST refuses every request: it records its gap, the backfill fails
    and live bars are stored past it; a third run, REST back, fetches that gap again and marks
    it filled. Before, the third run started after the newest stored bar: the hole stayed, its
    row unfilled for good. On SQLite and PostgreSQL."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 21, 8, 0, tzinfo=UTC)]
    sim = restart_sim(bars)

    async def run() -> None:
        async with sim:
            await ingest_until(sim, any_db, "binance", SERIES, bar_after(sim.clock.now()), quiet=False)
            await ingest_until(sim, any_db, "binance", SERIES, bar_after(sim.clock.now(), 3), quiet=False,
                               rest_url=closed_port())
            (hole,) = list_gaps(any_db, [SERIES])
            stored = read_bars(any_db, SERIES)
            assert hole.filled_at is None and stored[-1].open_time >= hole.end  # live bars past it
            assert not [b for b in stored if hole.start <= b.open_time < hole.end]
            await ingest_until(sim, any_db, "binance", SERIES, bar_after(sim.clock.now(), 2), quiet=False)

    asyncio.run(run())
    assert len(assert_gaps_filled_and_bars_exact(any_db, bars)) == 2


def test_a_restart_after_rest_filled_the_last_gap_before_a_live_bar_still_records_its_gap(
    any_db: Database, csv_bars: list[Bar]
) -> None:
    """A run; a restart stopped as soon as REST filled its gap (the bar in progress too), before
    its first live bar was stored about one bar later; the exchange trades on; a third run. The
    newest stored bar came from REST, in the second run's gap: the series was live, and the
    third run records what it missed after it as a gap. Before, it took that for history: the
    bars came from REST and no gap said so. On SQLite and PostgreSQL."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 21, 8, 0, tzinfo=UTC)]
    sim = restart_sim(bars)

    def its_gap_filled() -> FeedGap | None:
        gaps = list_gaps(any_db, [SERIES])
        return gaps[0] if gaps and gaps[0].filled_at is not None else None

    async def run() -> FeedGap:
        async with sim:
            await ingest_until(sim, any_db, "binance", SERIES, bar_after(sim.clock.now()), quiet=False)
            gap = await ingest_until_seen(sim, any_db, its_gap_filled)
            with any_db.begin() as conn:  # a live bar stored before the stop was seen: stopped a moment earlier
                conn.execute(delete(bars_t).where(series_is(bars_t, SERIES), bars_t.c.open_time >= gap.end))
            newest = read_bars(any_db, SERIES)[-1]
            assert newest.source == "backfill" and gap.start <= newest.open_time < gap.end
            down_until = sim.clock.now() + 3 * STEP_S
            while sim.clock.now() < down_until:  # the exchange trades on while the daemon is down
                await asyncio.sleep(0.01)
            await ingest_until(sim, any_db, "binance", SERIES, bar_after(sim.clock.now(), 2), quiet=False)
            return gap

    second = asyncio.run(run())
    gaps = assert_gaps_filled_and_bars_exact(any_db, bars)
    assert len(gaps) == 2 and gaps[0] == second and gaps[1].start == second.end, gaps
    assert gaps[1].bars_missed >= 3


def test_a_series_handed_on_and_back_costs_the_other_series_of_its_connection_nothing(
    tmp_db: Database, csv_bars: list[Bar]
) -> None:
    """Two series on one connection, both live; one is handed on (`Ingest.drop`), later taken
    back (`Ingest.add`: a connection of its own, restored from the database). The other keeps
    its connection and bar in progress throughout: no gap, no reconnect; the one that moved has
    its takeover gap, filled; both series' bars are the exchange's."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 21, 8, 0, tzinfo=UTC)]
    other = SeriesKey("binance", "ETH-USDT", "5m")
    sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries(k.symbol, tuple(bars)) for k in (SERIES, other)],
                            speed=300.0, start=SIM_START.timestamp(), heartbeat_s=0.05)

    async def run() -> Ingest:
        async with sim:
            ingest = Ingest([FeedSpec("binance", (SERIES, other), sim.ws_url, sim.rest_url)], FAST,
                            database=tmp_db, clock=sim.clock.now, rest_min_interval_s=0.0, backfill_retry_s=0.05,
                            tick_s=0.02, rest_poll_s=0.05)
            updates = ingest.updates()
            task = asyncio.create_task(ingest.run())

            async def closed(key: SeriesKey, bars_from_now: int) -> None:
                at = bar_after(sim.clock.now(), bars_from_now)
                async for u in updates:
                    if u.bar.series == key and u.kind == "closed" and u.bar.open_time >= at:
                        return

            try:
                await asyncio.wait_for(closed(other, 1), 60)
                await ingest.drop([other])
                await asyncio.wait_for(closed(SERIES, 3), 60)
                await ingest.add([FeedSpec("binance", (other,), sim.ws_url, sim.rest_url)])
                await asyncio.wait_for(closed(other, 2), 60)
            finally:
                ingest.stop()
                await task
            return ingest

    ingest = asyncio.run(run())
    kept, moved = ingest.feeds
    assert [s.key for s in kept.series] == [SERIES] and [s.key for s in moved.series] == [other]
    assert kept.connection.connects == 1 and kept.connection.natives == ["BTCUSDT"]
    assert list_gaps(tmp_db, [SERIES]) == []
    (gap,) = list_gaps(tmp_db, [other])
    assert gap.filled_at is not None and gap.bars_filled == gap.bars_missed >= 3, gap
    for key in (SERIES, other):
        stored = read_bars(tmp_db, key)
        assert values(stored) == values([b for b in bars if b.open_time <= stored[-1].open_time]), key
    assert Counter(b.source for b in read_bars(tmp_db, SERIES))["live"] >= 4


def test_dense_trades_store_the_csv_bars_text_for_text(tmp_db: Database, csv_bars: list[Bar]) -> None:
    """50 trades per bar through the whole daemon path (websocket, session, hot path, store):
    every live bar has the CSV bar's exact text and the trade count the simulator sent."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)]
    ingest = asyncio.run(run_sim_ingest(tmp_db, bars, None, trades_per_bar=50))
    stored = read_bars(tmp_db, SERIES)
    assert values(stored) == values(bars)
    by_time = {b.open_time: b for b in bars}
    live = [b for b in stored if b.source == "live" and b.trade_count]
    assert len(live) > 80
    for b in live:
        want = by_time[b.open_time]
        assert [decimal_text(x) for x in (b.open, b.high, b.low, b.close, b.volume)] == [
            decimal_text(x) for x in (want.open, want.high, want.low, want.close, want.volume)
        ], b
    assert sum(b.trade_count == 50 for b in live) >= 0.9 * len(live)
    assert ingest.stats()["binance"]["malformed"] == {}


def test_a_subscription_never_acknowledged_goes_live_while_trades_flow(tmp_db: Database, csv_bars: list[Bar]) -> None:
    """The exchange never acknowledges, but trades never stop either (the session's clock ticks
    only when the feed idles, or every tick while it is busy): after `ack_timeout_s` the feed is
    live and bars are built from trades."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)]
    options = replace(FAST, ack_timeout_s=0.2)
    # heartbeats every 0.05 s and trades in between: the feed never idles for a 0.1 s tick
    ingest = asyncio.run(
        run_sim_ingest(tmp_db, bars, Faults(silent_subscribe=True), trades_per_bar=50, options=options, tick_s=0.1)
    )
    stored = read_bars(tmp_db, SERIES)
    assert values(stored) == values(bars)
    stats = ingest.stats()["binance"]
    assert stats["subscriptions"] >= 1 and "ack" not in stats["messages"], stats
    assert Counter(b.source for b in stored)["live"] > 30


def test_a_consumer_behind_takes_queued_trades_as_blocks(tmp_db: Database, csv_bars: list[Bar]) -> None:
    """A slow bar consumer (10 ms per batch of bars) lets frames queue up: the shell hands them
    to the session together and runs of trades take the block path. The stored bars stay the
    CSV bars, text for text, with every trade counted."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)]

    async def slow(_updates: object) -> None:
        await asyncio.sleep(0.01)

    ingest = asyncio.run(run_sim_ingest(tmp_db, bars, None, trades_per_bar=50, on_bars=slow))
    stored = read_bars(tmp_db, SERIES)
    assert [(b.open_time, *map(decimal_text, (b.open, b.high, b.low, b.close, b.volume))) for b in stored] == [
        (b.open_time, *map(decimal_text, (b.open, b.high, b.low, b.close, b.volume))) for b in bars
    ]
    live = [b for b in stored if b.source == "live" and b.trade_count]
    assert len(live) > 80 and sum(b.trade_count == 50 for b in live) >= 0.9 * len(live)
    stats = ingest.stats()["binance"]
    assert stats["malformed"] == {} and stats["block_trades"] > 0.1 * stats["trades"], stats


@pytest.mark.parametrize("protocol", ["kraken", "poloniex"])
def test_frames_of_several_trades_behind_a_slow_consumer(tmp_db: Database, csv_bars: list[Bar], protocol: str) -> None:
    """Busy markets: the exchange sends up to 5 trades a frame, the bar consumer is slow, so
    queued frames go in as blocks of whole frames. The stored bars are the CSV bars, text for
    text, with every trade counted."""
    bars = [b for b in csv_bars if b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)]
    series = SeriesKey(protocol, "BTC-USDT", "5m")

    async def slow(_updates: object) -> None:
        await asyncio.sleep(0.01)

    ingest = asyncio.run(
        run_sim_ingest(tmp_db, bars, None, protocol, series, trades_per_bar=50, on_bars=slow, trades_per_frame=5)
    )
    stored = read_bars(tmp_db, series)
    assert [(b.open_time, *map(decimal_text, (b.open, b.high, b.low, b.close, b.volume))) for b in stored] == [
        (b.open_time, *map(decimal_text, (b.open, b.high, b.low, b.close, b.volume))) for b in bars
    ]
    live = [b for b in stored if b.source == "live" and b.trade_count]
    assert len(live) > 80 and sum(b.trade_count == 50 for b in live) >= 0.9 * len(live)
    stats = ingest.stats()[protocol]
    assert stats["malformed"] == {} and stats["block_trades"] > 0.1 * stats["trades"], stats
    assert stats["messages"]["trade"] < 0.3 * stats["trades"], stats  # frames of several trades


@pytest.mark.parametrize("protocol", ["coinbase", "kraken", "bitstamp", "poloniex"])
def test_every_protocol_end_to_end(tmp_db: Database, csv_bars: list[Bar], protocol: str) -> None:
    """A short gap-free stretch through each exchange's own protocol and REST format."""
    series = SeriesKey(protocol, "BTC-USDT", "5m")
    bars = [
        Bar(protocol, "BTC-USDT", "5m", b.open_time, b.open, b.high, b.low, b.close, b.volume)
        for b in csv_bars
        if datetime(2020, 12, 20, 0, 0, tzinfo=UTC) <= b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)
    ]
    asyncio.run(run_sim_ingest(tmp_db, bars, Faults(drop_every_s=0.4), protocol=protocol, series=series))
    assert values(read_bars(tmp_db, series)) == values(bars)


def test_a_backfill_of_several_pages_is_logged_once_stored(tmp_db: Database, csv_bars: list[Bar]) -> None:
    """Coinbase serves 300 candles a page: 28 hours of 5m history is two pages. The log says
    once that the backfill starts (with its page count) and once what was stored, the whole
    range; before, every page was a line of its own (144 for 30 days of 1m bars), written
    before the page was stored."""
    series = SeriesKey("coinbase", "BTC-USDT", "5m")
    start = datetime(2020, 12, 21, 4, 0, tzinfo=UTC)
    bars = [
        Bar("coinbase", "BTC-USDT", "5m", b.open_time, b.open, b.high, b.low, b.close, b.volume)
        for b in csv_bars
        if b.open_time < datetime(2020, 12, 21, 12, 0, tzinfo=UTC)
    ]
    history = sum(b.open_time < start for b in bars)
    assert history > 300  # more than one page

    class Seen(logging.Handler):
        """Each record with the bars stored when it was written."""

        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.records: list[tuple[logging.LogRecord, int]] = []

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("backfill"):
                self.records.append((record, len(read_bars(tmp_db, series))))

    seen = Seen()
    logger = logging.getLogger("barcast")
    level = logger.level
    logger.addHandler(seen)
    logger.setLevel(logging.DEBUG)
    try:
        asyncio.run(run_sim_ingest(tmp_db, bars, None, "coinbase", series, options=replace(FAST, backfill_days=3.0),
                                   sim_start=start))
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert values(read_bars(tmp_db, series)) == values(bars)
    info = [(r, n) for r, n in seen.records if r.levelno >= logging.INFO]
    assert info[0][0].getMessage() == "backfilling" and info[0][0].pages >= 2, info  # type: ignore[attr-defined]
    done, stored = info[1]
    assert done.getMessage() == "backfilled", info
    assert done.start == bars[0].open_time.isoformat() and done.bars >= history, info  # type: ignore[attr-defined]
    assert stored >= done.bars  # type: ignore[attr-defined]  # written once the range is stored
    assert sum(r.getMessage() == "backfilled page" for r, _ in seen.records) >= 2  # pages: debug only
