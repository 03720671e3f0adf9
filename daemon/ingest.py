"""The ingest shell: exchange websockets -> parsers -> aggregators -> stored bars -> subscribers.

One `FeedConnection` per exchange (several symbols each), one processing task per connection,
one database writer. Every closed, amended or backfilled bar is upserted (idempotent) and then
published, in order, to `on_bars` and to every `updates()` iterator: a consumer never sees a bar
that is not stored.

What is known and what is backfilled (per series):
- `next_needed`: open time of the first bar not stored yet (from the database at start).
- When a connection is subscribed (all acknowledgements in), each aggregator resumes at the first
  boundary after that moment (`live_from`); the interval in progress is partial and is never built
  from trades. Bars in [next_needed, now) are fetched from REST at once, and the partial interval
  as soon as it is over, before any live bar is published, so bars arrive in order.
- On disconnect, bars that ended (+ grace) before it are closed, the partial one is dropped and
  the aggregator waits for the next subscription.

Clock: `clock()` is the exchange clock in seconds (wall time live, the simulator's clock in
tests). Each message is stamped with it on receipt, and bars close by that stamp, so a backlog in
the queue does not close bars early. `clock=None` uses only times the feed carries (trades,
timed heartbeats): nothing closes while a feed is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from daemon import metrics
from daemon.bars import Aggregator, BarUpdate
from daemon.config import Config, FeedsConfig
from daemon.feeds import protocol as get_protocol
from daemon.feeds.backfill import BackfillError, RestClient, backfill_bars
from daemon.feeds.base import ExchangeProtocol, ParseResult, Trade
from daemon.feeds.connection import FeedConnection, FeedEvent
from db.bars import latest_bars, upsert_bars
from db.cluster import Fence
from db.engine import Database
from db.records import SeriesKey, interval_seconds, to_unix

log = logging.getLogger("barcast.ingest")

#: The forecaster's window: start-up backfill fetches at least this many bars.
MIN_HISTORY_BARS = 256
#: Without acknowledgements for this long after connecting, treat the subscription as live.
ACK_TIMEOUT_S = 10.0
#: A failed backfill is retried after this many (wall) seconds.
BACKFILL_RETRY_S = 30.0
#: While a websocket is down, closed bars are fetched from REST this often (wall seconds).
REST_POLL_S = 10.0
#: Malformed messages logged per reason before logging only every 1000th.
LOG_FIRST = 5

BarsCallback = Callable[[list[BarUpdate]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One exchange connection: its series (any symbols and intervals) and URL overrides."""

    exchange: str
    series: tuple[SeriesKey, ...]
    ws_url: str | None = None
    rest_url: str | None = None


def specs_from_config(config: Config) -> list[FeedSpec]:
    """Group the configured series by exchange, with that exchange's URL overrides."""
    by_exchange: dict[str, list[SeriesKey]] = defaultdict(list)
    for key in config.series_keys:
        by_exchange[key.exchange].append(key)
    out = []
    for ex, keys in by_exchange.items():
        get_protocol(ex)  # unknown exchange: an input error now, not a dead feed later
        xc = config.exchange(ex)
        out.append(FeedSpec(ex, tuple(keys), xc.ws_url or None, xc.rest_url or None))
    return out


@dataclass(slots=True)
class _Series:
    key: SeriesKey
    native: str
    agg: Aggregator
    step_us: int
    next_needed_us: int | None = None
    last_close: Decimal | None = None
    #: [next_needed, live_from) still to fetch; live_from is the first bar built from trades.
    pending_until_us: int | None = None
    retry_at: float = 0.0


@dataclass(slots=True)
class FeedStats:
    """Counters of one exchange feed (also exported as Prometheus metrics)."""

    messages: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    trades: int = 0
    unknown_symbol: int = 0
    future_trades: int = 0
    backfilled_bars: int = 0
    backfill_failures: int = 0
    subscriptions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(self.messages),
            "malformed": dict(self.malformed),
            "trades": self.trades,
            "unknown_symbol": self.unknown_symbol,
            "future_trades": self.future_trades,
            "backfilled_bars": self.backfilled_bars,
            "backfill_failures": self.backfill_failures,
            "subscriptions": self.subscriptions,
        }


class _Feed:
    """The processing side of one connection."""

    def __init__(self, ingest: Ingest, spec: FeedSpec) -> None:
        self.ingest = ingest
        self.spec = spec
        self.protocol: ExchangeProtocol = get_protocol(spec.exchange)
        opts = ingest.options
        self.series: list[_Series] = []
        self.by_native: dict[str, list[_Series]] = defaultdict(list)
        for key in spec.series:
            native = self.protocol.native_symbol(key.symbol)
            s = _Series(
                key,
                native,
                Aggregator(key, grace_s=opts.grace_s, late_allowance_s=opts.late_allowance_s),
                interval_seconds(key.interval) * 1_000_000,
            )
            s.agg.interrupt()  # nothing is observed before the first subscription
            self.series.append(s)
            self.by_native[native].append(s)
        self.natives = list(self.by_native)
        self.connection = FeedConnection(
            self.protocol,
            self.natives,
            opts,
            url=spec.ws_url,
            capture=None,
            queue=asyncio.Queue(opts.queue_size),
            clock=ingest.clock,
        )
        self.rest = RestClient(
            self.protocol, spec.rest_url, timeout_s=opts.rest_timeout_s, min_interval_s=ingest.rest_min_interval_s
        )
        self.stats = FeedStats()
        self._acks_needed = 0
        self._up_at: float | None = None  # monotonic time of 'up' while awaiting acknowledgements
        self._await_feed_time = False
        self._feed_time_us = 0
        self._last_msg_stamp: float | None = None
        self._connected = False
        self._next_poll = 0.0  # REST-only polling while the websocket is down
        self._logged: Counter[str] = Counter()

    # --- time ------------------------------------------------------------------------------------
    def _now_us(self, stamp: float | None) -> int | None:
        if self.ingest.clock is None:
            return self._feed_time_us or None
        return int((stamp if stamp is not None else self.ingest.clock()) * 1_000_000)

    # --- main loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        conn_task = asyncio.create_task(self.connection.run(), name=f"feed:{self.spec.exchange}")
        me = asyncio.current_task()
        try:
            while not self.ingest._stop.is_set():
                # Python 3.11's wait_for can swallow a cancellation that lands as the queue yields
                # an item; re-raise it here, or a stopped ingest would keep running.
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError
                try:
                    ev = await asyncio.wait_for(self.connection.queue.get(), self.ingest.tick_s)
                except TimeoutError:
                    await self._tick()
                    continue
                if ev.kind == "message":
                    await self._message(ev)
                elif ev.kind == "up":
                    self._up(ev)
                else:
                    await self._down(ev)
        finally:
            self.connection.stop()
            conn_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn_task

    def _up(self, ev: FeedEvent) -> None:
        self._acks_needed = self.protocol.expected_acks(self.natives)
        self._up_at = time.monotonic()
        self._last_msg_stamp = ev.received
        self._connected = True
        self._await_feed_time = False

    async def _down(self, ev: FeedEvent) -> None:
        # The drop happened some time before we noticed it. Bars are proven complete only up to the
        # last message received (minus grace); any closed after that by the clock alone are suspect
        # and fetched again from REST after the reconnect (the upsert corrects them if needed).
        last = self._now_us(self._last_msg_stamp)
        grace_us = int(self.ingest.options.grace_s * 1_000_000)
        for s in self.series:
            if last is not None and s.next_needed_us is not None:
                s.next_needed_us = min(s.next_needed_us, s.agg.floor(last - grace_us))
            s.agg.interrupt()
        self._connected = False
        self._next_poll = time.monotonic() + self.ingest.rest_poll_s
        self._up_at = None
        self._await_feed_time = False
        log.info(
            "feed down; bars resume after resubscription", extra={"exchange": self.spec.exchange, "reason": ev.reason}
        )

    async def _rest_only(self) -> None:
        """While the websocket is down, keep bars flowing from REST (a periodic backfill)."""
        clock = self.ingest.clock
        if clock is None or self._connected or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + self.ingest.rest_poll_s
        now_us = int(clock() * 1_000_000)
        grace_us = int(self.ingest.options.grace_s * 1_000_000)
        for s in self.series:
            self._ensure_start(s, now_us)
            await self._backfill(s, s.agg.floor(now_us - grace_us))

    def _ensure_start(self, s: _Series, now_us: int) -> None:
        if s.next_needed_us is None:
            history = max(self.ingest.options.backfill_days * 86_400_000_000, MIN_HISTORY_BARS * s.step_us)
            s.next_needed_us = s.agg.floor(int(now_us - history))

    async def _tick(self) -> None:
        await self._rest_only()
        if self._up_at is not None and time.monotonic() - self._up_at > ACK_TIMEOUT_S and not self._await_feed_time:
            log.warning(
                "no subscription acknowledgement; treating the stream as live", extra={"exchange": self.spec.exchange}
            )
            await self._subscribed(self.ingest.clock() if self.ingest.clock else None)
        now = self._now_us(None)
        if now is None:
            return
        await self._due_backfills(now)
        for s in self.series:
            if not s.agg.suspended:
                await self.ingest.publish(self._closed(s, s.agg.advance(now)))

    async def _message(self, ev: FeedEvent) -> None:
        res: ParseResult = self.protocol.parse(ev.text)
        self._last_msg_stamp = ev.received
        st = self.stats
        st.messages[res.kind] += 1
        metrics.MESSAGES.labels(self.spec.exchange, res.kind).inc()
        if res.kind == "malformed" or res.kind == "error":
            self._log_bad(res, ev.text)
        elif res.kind == "ack" and self._up_at is not None:
            self._acks_needed -= 1
            if self._acks_needed <= 0:
                await self._subscribed(ev.received if self.ingest.clock is not None else None)
        if res.reconnect:
            self.connection.reconnect()
        if res.time_us is not None and res.time_us > self._feed_time_us:
            self._feed_time_us = res.time_us
        if res.trades:
            await self._trades(res.trades, ev.received)
        elif self._await_feed_time and res.time_us is not None:
            await self._resume_all(res.time_us)
        now = self._now_us(ev.received)
        if now is not None:
            await self._due_backfills(now)
            for s in self.series:
                if not s.agg.suspended:
                    ups = s.agg.advance(now)
                    if ups:
                        await self.ingest.publish(self._closed(s, ups))

    async def _trades(self, trades: Sequence[Trade], received: float) -> None:
        st = self.stats
        clock = self.ingest.clock
        limit = int((received + self.ingest.options.max_future_s) * 1_000_000) if clock is not None else None
        for tr in trades:
            st.trades += 1
            targets = self.by_native.get(tr.native_symbol)
            if not targets:
                st.unknown_symbol += 1
                continue
            if limit is not None and tr.time_us > limit:
                st.future_trades += 1
                continue
            if tr.time_us > self._feed_time_us:
                self._feed_time_us = tr.time_us
            if self._await_feed_time:
                await self._resume_all(tr.time_us)
            now = self._now_us(received)
            if now is not None:
                await self._due_backfills(max(now, tr.time_us))
            for s in targets:
                ups = s.agg.add(tr)
                if ups:
                    await self.ingest.publish(self._closed(s, ups))
        metrics.TRADES.labels(self.spec.exchange, "all").inc(len(trades))

    # --- subscription and backfill ------------------------------------------------------------
    async def _subscribed(self, at: float | None) -> None:
        self._up_at = None
        self.stats.subscriptions += 1
        if at is None:  # feed clock: live from the first time the feed tells us
            self._await_feed_time = True
            return
        await self._resume_all(int(at * 1_000_000))

    async def _resume_all(self, observed_us: int) -> None:
        self._await_feed_time = False
        grace_us = int(self.ingest.options.grace_s * 1_000_000)
        for s in self.series:
            s.agg.resume(observed_us, s.last_close)
            live_from = s.agg.cursor_us
            assert live_from is not None
            self._ensure_start(s, observed_us)
            s.pending_until_us = live_from
            s.retry_at = 0.0
            # what has closed already can be fetched now; the partial interval once it is over
            await self._backfill(s, s.agg.floor(observed_us - grace_us))

    async def _due_backfills(self, now_us: int) -> None:
        grace_us = int(self.ingest.options.grace_s * 1_000_000)
        for s in self.series:
            due = s.pending_until_us is not None and now_us >= s.pending_until_us + grace_us
            if due and time.monotonic() >= s.retry_at:
                assert s.pending_until_us is not None
                await self._backfill(s, s.pending_until_us, final=True)

    async def _backfill(self, s: _Series, until_us: int, *, final: bool = False) -> None:
        start_us = s.next_needed_us
        if start_us is None or until_us <= start_us:
            if final:
                s.pending_until_us = None
            return
        try:
            bars = await backfill_bars(self.rest, s.key, s.native, start_us // 1_000_000, until_us // 1_000_000)
        except BackfillError as exc:
            self.stats.backfill_failures += 1
            s.retry_at = time.monotonic() + self.ingest.backfill_retry_s
            log.warning("backfill failed; will retry", extra={"series": str(s.key), "error": str(exc)})
            return
        self.stats.backfilled_bars += len(bars)
        s.next_needed_us = max(s.next_needed_us or 0, until_us)
        if final:
            s.pending_until_us = None
        if bars:
            s.last_close = bars[-1].close
            s.agg.set_last_close(bars[-1].close)
            await self.ingest.publish([BarUpdate(b, "backfilled") for b in bars])

    def _closed(self, s: _Series, ups: list[BarUpdate]) -> list[BarUpdate]:
        for u in ups:
            if u.kind == "closed":
                end = to_unix(u.bar.open_time) * 1_000_000 + s.step_us
                if s.next_needed_us is None or end > s.next_needed_us:
                    s.next_needed_us = end
                s.last_close = u.bar.close
                metrics.BARS_CLOSED.labels(str(s.key)).inc()
            else:
                metrics.LATE_TRADES.labels(str(s.key), "amended").inc()
        return ups

    def _log_bad(self, res: ParseResult, text: str | bytes) -> None:
        reason = res.reason or res.kind
        if res.kind == "malformed":
            self.stats.malformed[reason] += 1
            metrics.MALFORMED.labels(self.spec.exchange, reason.split(":")[0]).inc()
        self._logged[reason] += 1
        n = self._logged[reason]
        if n <= LOG_FIRST or n % 1000 == 0:
            raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
            log.warning(
                "skipped %s message",
                res.kind,
                extra={
                    "exchange": self.spec.exchange,
                    "reason": reason,
                    "count": n,
                    "raw": raw[:200] + ("…" if len(raw) > 200 else ""),
                },
            )


class Ingest:
    """Feeds -> bars -> database -> subscribers. `await run()` until `stop()` (or cancellation).

    `clock`: exchange clock in seconds (default: wall clock; None: feed times only).
    `on_bars`: awaited with each batch of stored updates, in order (backpressure: a slow callback
    slows the ingest down, bounded queues then resync the feeds).
    """

    def __init__(
        self,
        feeds: Sequence[FeedSpec],
        options: FeedsConfig,
        *,
        database: Database | None = None,
        clock: Callable[[], float] | None = time.time,
        on_bars: BarsCallback | None = None,
        tick_s: float = 0.25,
        rest_min_interval_s: float | None = None,
        backfill_retry_s: float = BACKFILL_RETRY_S,
        rest_poll_s: float = REST_POLL_S,
        db_call: Callable[..., Awaitable[Any]] | None = None,
        fence: Callable[[], Fence | None] | None = None,
    ) -> None:
        self.options = options
        #: The fencing tokens bar writes carry when several daemons share the database.
        self.fence = fence
        self.database = database
        #: Runs a blocking database call off the loop; the live service passes its single writer
        #: thread so every write of the process goes through one place.
        self.db_call: Callable[..., Awaitable[Any]] = db_call or asyncio.to_thread
        self.clock = clock
        self.on_bars = on_bars
        self.tick_s = tick_s
        self.rest_min_interval_s = rest_min_interval_s
        self.backfill_retry_s = backfill_retry_s
        self.rest_poll_s = rest_poll_s
        self.feeds = [_Feed(self, spec) for spec in feeds]
        self._subscribers: list[asyncio.Queue[BarUpdate | None]] = []
        self._stop = asyncio.Event()
        self.bars_written = 0
        self.started = asyncio.Event()
        self._write_lock = asyncio.Lock()

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        database: Database | None,
        clock: Callable[[], float] | str | None = "config",
        on_bars: BarsCallback | None = None,
        db_call: Callable[..., Awaitable[Any]] | None = None,
        fence: Callable[[], Fence | None] | None = None,
        only: Collection[SeriesKey] | None = None,
    ) -> Ingest:
        """`only`: ingest just these of the configured series (the ones this daemon owns)."""
        if clock == "config":
            clock = time.time if config.feeds.clock == "wall" else None
        assert not isinstance(clock, str)
        specs = specs_from_config(config)
        if only is not None:
            specs = [replace(sp, series=tuple(k for k in sp.series if k in only)) for sp in specs]
            specs = [sp for sp in specs if sp.series]
        return cls(specs, config.feeds, database=database, clock=clock, on_bars=on_bars,
                   db_call=db_call, fence=fence)

    @property
    def series(self) -> list[SeriesKey]:
        return [s.key for f in self.feeds for s in f.series]

    def stats(self) -> dict[str, Any]:
        """Counters per exchange and per series (for logs, tests and the CLI summary)."""
        return {
            f.spec.exchange: {
                **f.stats.as_dict(),
                "connects": f.connection.connects,
                "resyncs": f.connection.resyncs,
                "series": {str(s.key): s.agg.stats.as_dict() for s in f.series},
            }
            for f in self.feeds
        }

    def stop(self) -> None:
        self._stop.set()

    def updates(self, maxsize: int = 10_000) -> AsyncIterator[BarUpdate]:
        """An iterator over every stored update from now on; ends when the ingest stops."""
        q: asyncio.Queue[BarUpdate | None] = asyncio.Queue(maxsize)
        self._subscribers.append(q)

        async def gen() -> AsyncIterator[BarUpdate]:
            try:
                while (u := await q.get()) is not None:
                    yield u
            finally:
                with contextlib.suppress(ValueError):
                    self._subscribers.remove(q)

        return gen()

    async def _restore(self) -> None:
        """Resume from stored bars: each series continues after its latest stored bar."""
        if self.database is None:
            return
        newest = await self.db_call(latest_bars, self.database, self.series)
        for f in self.feeds:
            for s in f.series:
                bar = newest.get(s.key)
                if bar is not None:
                    s.next_needed_us = to_unix(bar.open_time) * 1_000_000 + s.step_us
                    s.last_close = bar.close
                    log.info(
                        "resuming after stored bars", extra={"series": str(s.key), "latest": bar.open_time.isoformat()}
                    )

    async def publish(self, updates: list[BarUpdate]) -> None:
        """Store, then hand on. One caller at a time per feed; stores are serialised by the lock."""
        if not updates:
            return
        if self.database is not None:
            async with self._write_lock:
                fence = self.fence() if self.fence is not None else None
                if fence is not None:  # a series handed to another daemon: not stored, not passed on
                    updates = [u for u in updates if u.bar.series in fence.tokens]
                    if not updates:
                        return
                self.bars_written += await self.db_call(
                    functools.partial(upsert_bars, fence=fence), self.database, [u.bar for u in updates])
        if self.on_bars is not None:
            await self.on_bars(updates)
        for q in self._subscribers:
            for u in updates:
                await q.put(u)

    async def run(self) -> None:
        await self._restore()
        if self._stop.is_set():
            return
        tasks = [asyncio.create_task(f.run(), name=f"ingest:{f.spec.exchange}") for f in self.feeds]
        self.started.set()
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in [*tasks, stop]:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for q in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)
