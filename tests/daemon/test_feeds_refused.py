"""A subscription the exchange refuses (a misspelt, delisted or halted symbol), through each
exchange's real simulator on 127.0.0.1: one listed and one unknown series on one connection.

Each exchange refuses in its own way (the simulator speaks through the protocol module):
Coinbase refuses the whole subscribe naming the product, Kraken the one symbol, Poloniex the
request naming nothing, Binance and Bitstamp acknowledge it, stay silent, and refuse it on REST.
The listed series' bars must still equal the CSV; the unknown one is reported refused with the
exchange's reason, logged once per connection, asked for again with backoff, and gets no bars.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator
from daemon.ingest import FeedSpec, Ingest
from db.bars import read_bars
from db.engine import Database
from db.records import Bar, SeriesKey
from tests.daemon.test_ingest_e2e import FAST, SIM_START, csv_bars, simulator, values

__all__ = ["csv_bars"]

pytestmark = pytest.mark.slow

#: The exchange's own words for the unknown symbol, as the daemon reports them.
REASONS = {
    "coinbase": "Failed to subscribe: FOO-USDT is not a valid product",
    "kraken": "Currency pair not supported FOO/USDT",
    "poloniex": "Subscription failed",
    "binance": "Invalid symbol.",
    "bitstamp": 'HTTP 404 {"code":"404","message":"Not found"}',
}


async def _ingest(sim: ExchangeSimulator, db: Database, good: SeriesKey, bad: SeriesKey, last: datetime) -> Ingest:
    ingest = Ingest(
        [FeedSpec(good.exchange, (good, bad), sim.ws_url, sim.rest_url)],
        replace(FAST, refused_retry_s=0.2, refused_retry_max_s=0.4),
        database=db,
        clock=sim.clock.now,
        rest_min_interval_s=0.0,
        backfill_retry_s=0.05,
        tick_s=0.02,
        rest_poll_s=0.05,
    )
    updates = ingest.updates()
    task = asyncio.create_task(ingest.run())

    async def until_last() -> None:
        async for u in updates:
            if u.bar.series == good and u.bar.open_time >= last:
                break
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            while True:
                await asyncio.wait_for(anext(updates), timeout=0.5)

    try:
        await asyncio.wait_for(until_last(), timeout=60)
    except TimeoutError:
        pass  # the comparison shows what is missing
    finally:
        ingest.stop()
        await task
    return ingest


@pytest.mark.parametrize("protocol", ["coinbase", "binance", "kraken", "bitstamp", "poloniex"])
def test_a_refused_series_is_reported_and_retried_while_the_other_goes_on(
    tmp_db: Database, csv_bars: list[Bar], protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = SeriesKey(protocol, "BTC-USDT", "5m")
    bad = SeriesKey(protocol, "FOO-USDT", "5m")
    bars = [
        Bar(protocol, "BTC-USDT", "5m", b.open_time, b.open, b.high, b.low, b.close, b.volume)
        for b in csv_bars
        if datetime(2020, 12, 20, 0, 0, tzinfo=UTC) <= b.open_time < datetime(2020, 12, 20, 20, 0, tzinfo=UTC)
    ]

    async def run() -> tuple[Ingest, int]:
        async with simulator(bars, None, protocol, good, sim_start=SIM_START) as sim:
            ingest = await _ingest(sim, tmp_db, good, bad, bars[-1].open_time)
            return ingest, sim.refusals

    with caplog.at_level(logging.INFO, logger="barcast.ingest"):
        ingest, sim_refusals = asyncio.run(run())
    assert values(read_bars(tmp_db, good)) == values(bars)
    assert read_bars(tmp_db, bad) == []
    feed = ingest.feeds[0]
    assert feed.session.refused_reason(bad) == REASONS[protocol]
    assert feed.session.refused_reason(good) is None
    stats = ingest.stats()[protocol]
    assert stats["refusals"] >= 2, stats  # asked for again (and refused again) while the other ran
    if protocol in ("coinbase", "kraken", "poloniex"):  # refused on the websocket itself
        assert sim_refusals >= 2
    said = [r for r in caplog.records if r.getMessage().startswith("subscription refused")]
    assert said and len(said) <= stats["connects"], (len(said), stats["connects"])  # once per connection
    assert all(r.reason == REASONS[protocol] and r.series == [str(bad)] for r in said)  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.getMessage().startswith("backfill failed")]


def test_every_protocol_parses_its_refusal_naming_the_symbol_it_can() -> None:
    """What each protocol's parser makes of the exchange's refusal shapes (real examples)."""
    cases = {
        "coinbase": ('{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is not a valid product"}',
                     ("FOO-USD",)),
        "kraken": ('{"error":"Currency pair not supported XBT/FOO","method":"subscribe","success":false,'
                   '"symbol":"XBT/FOO","time_in":"2024-01-01T00:00:00.000000Z",'
                   '"time_out":"2024-01-01T00:00:00.000100Z"}', ("XBT/FOO",)),
        "binance": ('{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}', ()),
        "bitstamp": ('{"event":"bts:error","channel":"","data":{"code":null,"message":"Bad subscription string."}}',
                     ()),
        "poloniex": ('{"event":"error","message":"Subscription failed"}', ()),
    }
    for name, (text, natives) in cases.items():
        res = PROTOCOLS[name].parse(text)
        assert res.kind == "error" and res.refused == natives, (name, res)
    v1 = PROTOCOLS["kraken"].parse('{"errorMessage":"Currency pair not supported XBT/FOO","event":"subscriptionStatus",'
                                   '"pair":"XBT/FOO","status":"error","subscription":{"name":"trade"}}')
    assert v1.refused == ("XBT/FOO",) and v1.reason == "subscription_refused:Currency pair not supported XBT/FOO"
