"""The ingest shell: exchange websockets -> sessions -> aggregators -> stored bars -> subscribers.

One `FeedConnection` (bytes) and one `FeedSession` (decisions, see daemon/feeds/session.py) per
exchange connection, several symbols each; one processing task per connection; one database
writer. This module only moves frames from the socket into the session and executes what the
session answers: store and publish bars, fetch REST ranges page by page (each page is stored in
its own transaction, so a backfill interrupted by a full disk or a crash resumes after the last
stored page), reconnect, log rejected frames, record feed gaps and mark them filled. Every
closed, amended or backfilled bar is upserted (idempotent) and then published, in order, to
`on_bars` and to every `updates()` iterator: a consumer never sees a bar that is not stored.

Clock: `clock()` is the exchange clock in seconds (wall time live, the simulator's clock in
tests). Each frame is stamped with it on receipt, and bars close by that stamp, so a backlog in
the queue does not close bars early. `clock=None` uses only times the feed carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon import metrics
from daemon.bars import BarUpdate
from daemon.config import Config, FeedsConfig
from daemon.feeds import protocol as get_protocol
from daemon.feeds.backfill import BackfillError, RestClient, backfill_pages
from daemon.feeds.connection import FeedConnection, FeedEvent
from daemon.feeds.fields import seconds
from daemon.feeds.session import (
    MIN_HISTORY_BARS,
    Action,
    Backfill,
    FeedSession,
    FeedStats,
    GapDetected,
    GapFilled,
    Publish,
    Reconnect,
    Rejected,
    SeriesState,
    SessionOptions,
    Subscribe,
    SubscriptionAccepted,
    SubscriptionRefused,
)
from daemon.live.dbretry import retrying
from db.bars import latest_bars, upsert_bars
from db.cluster import Fence
from db.engine import Database
from db.gaps import FeedGap, gap_ends_holding, list_gaps, mark_gap_filled, record_gap, settle_gaps
from db.records import Bar, SeriesKey, interval_seconds, utc_from_unix

__all__ = ["MIN_HISTORY_BARS", "FeedSpec", "FeedStats", "Ingest", "specs_from_config"]

log = logging.getLogger("barcast.ingest")

#: Most queued frames handed to the session at once (see `FeedSession.messages`).
MAX_BATCH = 1024
#: A failed backfill is retried after this many (wall) seconds.
BACKFILL_RETRY_S = 30.0
#: While a websocket is down, closed bars are fetched from REST this often (wall seconds).
REST_POLL_S = 10.0

BarsCallback = Callable[[list[BarUpdate]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One exchange connection: its series (any symbols and intervals) and URL overrides."""

    exchange: str
    series: tuple[SeriesKey, ...]
    ws_url: str | None = None
    rest_url: str | None = None


def specs_from_config(config: Config, only: Collection[SeriesKey] | None = None) -> list[FeedSpec]:
    """Group the configured series (`only` these, if given) by exchange, with that exchange's
    URL overrides."""
    by_exchange: dict[str, list[SeriesKey]] = defaultdict(list)
    for key in config.series_keys:
        if only is None or key in only:
            by_exchange[key.exchange].append(key)
    out = []
    for ex, keys in by_exchange.items():
        get_protocol(ex)  # unknown exchange: an input error now, not a dead feed later
        xc = config.exchange(ex)
        out.append(FeedSpec(ex, tuple(keys), xc.ws_url or None, xc.rest_url or None))
    return out


class _Feed:
    """The shell of one connection: socket events into the session, its actions executed."""

    def __init__(self, ingest: Ingest, spec: FeedSpec) -> None:
        self.ingest = ingest
        self.spec = spec
        self.protocol = get_protocol(spec.exchange)
        opts = ingest.options
        self.session = FeedSession(
            self.protocol,
            spec.series,
            SessionOptions(
                grace_s=opts.grace_s,
                late_allowance_s=opts.late_allowance_s,
                max_future_s=opts.max_future_s,
                backfill_days=opts.backfill_days,
                stall_timeout_s=opts.stall_timeout_s,
                ack_timeout_s=opts.ack_timeout_s,
                refused_retry_s=opts.refused_retry_s,
                refused_retry_max_s=opts.refused_retry_max_s,
                backfill_retry_s=ingest.backfill_retry_s,
                rest_poll_s=ingest.rest_poll_s,
                max_candles=self.protocol.max_candles,
            ),
            wall_clock=ingest.clock is not None,
        )
        session = self.session
        self.connection = FeedConnection(
            self.protocol,
            lambda: session.subscribable(time.monotonic()),
            opts,
            url=spec.ws_url,
            capture=None,
            queue=asyncio.Queue(opts.queue_size),
            clock=ingest.clock,
        )
        self.rest = RestClient(
            self.protocol, spec.rest_url, timeout_s=opts.rest_timeout_s, min_interval_s=ingest.rest_min_interval_s
        )
        self._exported: Counter[str] = Counter()  # what of the session's counters is in metrics

    @property
    def stats(self) -> FeedStats:
        return self.session.stats

    @property
    def series(self) -> list[SeriesState]:
        return self.session.series

    # --- main loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        conn_task = asyncio.create_task(self.connection.run(), name=f"feed:{self.spec.exchange}")
        me = asyncio.current_task()
        session = self.session
        queue = self.connection.queue
        clock = self.ingest.clock
        mono = time.monotonic
        pending: FeedEvent | None = None
        next_tick = mono() + self.ingest.tick_s
        try:
            while not self.ingest._stop.is_set():
                # Python 3.11's wait_for can swallow a cancellation that lands as the queue yields
                # an item; re-raise it here, or a stopped ingest would keep running.
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError
                if pending is not None:
                    ev, pending = pending, None
                else:
                    try:
                        ev = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        try:
                            ev = await asyncio.wait_for(queue.get(), self.ingest.tick_s)
                        except TimeoutError:
                            next_tick = mono() + self.ingest.tick_s
                            await self._execute(session.tick(clock() if clock else None, mono()))
                            self._export_metrics()
                            continue
                if ev.kind == "message":
                    # what else is queued goes with it: under load the queue holds many frames,
                    # and the session takes a run of trade frames as one block
                    texts, received = [ev.text], [ev.received]
                    while len(texts) < MAX_BATCH:
                        try:
                            nxt = queue.get_nowait()
                        except asyncio.QueueEmpty:
                            break
                        if nxt.kind != "message":
                            pending = nxt
                            break
                        texts.append(nxt.text)
                        received.append(nxt.received)
                    await self._messages(texts, received)
                    if mono() >= next_tick:
                        # a busy feed never idles, and acknowledgement timeouts and metrics must
                        # not wait for it to: tick at the last frame's stamp (bars close by
                        # receipt stamps, so a backlog still queued does not close them early)
                        next_tick = mono() + self.ingest.tick_s
                        await self._execute(session.tick(received[-1] if clock else None, mono()))
                        self._export_metrics()
                    continue
                if ev.kind == "up":
                    actions = session.up(ev.received, mono(), ev.natives)
                else:
                    actions = session.down(mono())
                    log.info(
                        "feed down; bars resume after resubscription",
                        extra={"exchange": self.spec.exchange, "reason": ev.reason},
                    )
                if actions:
                    await self._execute(actions)
        finally:
            session.close()
            self._export_metrics()
            self.connection.stop()
            conn_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn_task

    async def _messages(self, texts: list[str | bytes], received: list[float]) -> None:
        """Frames received together, in order; the session stops after one whose actions must
        be carried out (a backfill) before the next is read."""
        session = self.session
        while texts:
            actions, taken = session.messages(texts, received, time.monotonic())
            if actions:
                await self._execute(actions)
            if taken == len(texts):
                return
            texts, received = texts[taken:], received[taken:]

    async def _execute(self, actions: list[Action]) -> None:
        """Carry out the session's actions in order (a backfill's own actions run before the next)."""
        for a in actions:
            if type(a) is Publish:
                self._count_bars(a.updates)
                await self.ingest.publish(a.updates)
            elif type(a) is Backfill:
                await self._backfill(a)
            elif type(a) is Rejected:
                self._log_rejected(a)
            elif type(a) is Reconnect:
                log.warning("reconnecting", extra={"exchange": self.spec.exchange, "reason": a.reason})
                self.connection.reconnect()
            elif type(a) is GapDetected:
                await self._gap(a)
            elif type(a) is GapFilled:
                await self._gap_filled(a)
            elif type(a) is Subscribe:
                await self.connection.send(a.messages)
            elif type(a) is SubscriptionRefused:
                self._refused(a)
            elif type(a) is SubscriptionAccepted:
                log.info("subscription accepted; series resume",
                         extra={"exchange": self.spec.exchange, "symbol": a.native,
                                "series": [str(k) for k in a.series]})
                for k in a.series:
                    metrics.FEED_REFUSED.labels(str(k)).set(0)

    def _refused(self, a: SubscriptionRefused) -> None:
        """Said once per connection (the retries on it only count): which series, the exchange's
        own reason, when it is asked again; the others on the connection go on."""
        for k in a.series:
            metrics.REFUSALS.labels(k.exchange, k.symbol).inc()
            metrics.FEED_REFUSED.labels(str(k)).set(1)
        if a.log:
            log.warning(
                "subscription refused by the exchange; its series get no bars",
                extra={"exchange": self.spec.exchange, "symbol": a.native, "series": [str(k) for k in a.series],
                       "reason": a.reason, "retry_in_s": round(a.retry_in_s, 1)},
            )

    def _gap_fields(self, a: GapDetected | GapFilled) -> dict[str, Any]:
        start, end = utc_from_unix(seconds(a.start_us)), utc_from_unix(seconds(a.end_us))
        missed = (seconds(a.end_us) - seconds(a.start_us)) // interval_seconds(a.series.interval)
        return {"series": str(a.series), "start": start.isoformat(), "end": end.isoformat(), "bars_missed": missed}

    async def _gap(self, a: GapDetected) -> None:
        """A reconnect or restart cost the live stream these bars: say so once, count it, record it (before
        the backfill that fills it runs)."""
        log.warning("feed gap; backfilling the missed bars", extra=self._gap_fields(a))
        metrics.FEED_GAPS.labels(a.series.exchange, a.series.symbol).inc()
        start, end = utc_from_unix(seconds(a.start_us)), utc_from_unix(seconds(a.end_us))
        await self.ingest.write_gap(a.series, functools.partial(record_gap, start=start, end=end), "gaps")

    async def _gap_filled(self, a: GapFilled) -> None:
        """The backfill covering a gap is stored: record how many bars the range holds now."""
        start, end = utc_from_unix(seconds(a.start_us)), utc_from_unix(seconds(a.end_us))
        n = await self.ingest.write_gap(a.series, functools.partial(mark_gap_filled, start=start, end=end), "gaps")
        if n is not None:
            log.info("feed gap filled", extra={**self._gap_fields(a), "bars_filled": n})

    async def _backfill(self, req: Backfill) -> None:
        """Fetch `req` page by page; each page is stored before the next is fetched. One log line
        per range once it is stored (a line per page flooded the log: 144 for 30 days of 1m
        Coinbase), and one before a range of several pages, which can take a while."""
        session = self.session
        start, end = seconds(req.start_us), seconds(req.end_us)
        pages = backfill_pages(self.rest, req.series, req.native, start, end)
        n_pages = -(-(end - start) // (self.protocol.max_candles * interval_seconds(req.series.interval)))
        if n_pages > 1 and not req.open_ended:
            log.info(
                "backfilling",
                extra={"series": str(req.series), "start": utc_from_unix(start).isoformat(),
                       "end": utc_from_unix(end).isoformat(), "pages": n_pages},
            )
        stored: list[Bar] = []  # first and last stored bar
        count = 0
        try:
            async for page_end, bars, last in pages:
                if not session.has(req.series):  # handed on meanwhile: the rest is the new owner's
                    await self._execute(session.backfill_failed(req, time.monotonic()))
                    return
                await self._execute(session.backfilled(req, page_end, bars, last=last))
                if bars:
                    stored = [stored[0] if stored else bars[0], bars[-1]]
                    count += len(bars)
        except BackfillError as exc:
            if exc.refused is None:  # a refusal is said by the session's SubscriptionRefused
                log.warning(
                    "backfill failed; will retry",
                    extra={"series": str(req.series), "error": str(exc), "stored_bars": count},
                )
            await self._execute(session.backfill_failed(req, time.monotonic(), exc.refused))
            return
        if stored:
            log.info(
                "backfilled",
                extra={"series": str(req.series), "start": stored[0].open_time.isoformat(),
                       "end": stored[-1].open_time.isoformat(), "bars": count},
            )

    def _count_bars(self, updates: list[BarUpdate]) -> None:
        for u in updates:
            if u.kind == "closed":
                metrics.BARS_CLOSED.labels(f"{u.bar.exchange}:{u.bar.symbol}:{u.bar.interval}").inc()
            elif u.kind == "amended":
                metrics.LATE_TRADES.labels(f"{u.bar.exchange}:{u.bar.symbol}:{u.bar.interval}", "amended").inc()

    def _export_metrics(self) -> None:
        """Session counters into Prometheus (per tick, not per frame: the hot path stays plain ints)."""
        ex = self.spec.exchange
        st = self.session.stats
        done = self._exported
        for kind, n in st.messages.items():
            if n > done[kind]:
                metrics.MESSAGES.labels(ex, kind).inc(n - done[kind])
                done[kind] = n
        for reason, n in st.malformed.items():
            key = "malformed:" + reason
            if n > done[key]:
                metrics.MALFORMED.labels(ex, reason.split(":")[0]).inc(n - done[key])
                done[key] = n
        if st.trades > done["trades"]:
            metrics.TRADES.labels(ex, "all").inc(st.trades - done["trades"])
            done["trades"] = st.trades
        if st.block_trades > done["block_trades"]:
            metrics.BLOCK_TRADES.labels(ex).inc(st.block_trades - done["block_trades"])
            done["block_trades"] = st.block_trades

    def _log_rejected(self, r: Rejected) -> None:
        if FeedSession.should_log(r):
            raw = r.text if isinstance(r.text, str) else r.text.decode("utf-8", "replace")
            log.warning(
                "skipped %s message",
                r.kind,
                extra={
                    "exchange": self.spec.exchange,
                    "reason": r.reason,
                    "count": r.count,
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
        self._tasks: dict[_Feed, asyncio.Task[None]] = {}
        self._starting = asyncio.Lock()  # feeds are restored and started one batch at a time
        self._failure: BaseException | None = None
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
        return cls(specs_from_config(config, only), config.feeds, database=database, clock=clock, on_bars=on_bars,
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
                "reconnects": f.connection.reconnects,
                "resyncs": f.connection.resyncs,
                "state": f.session.state.value,
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

    async def _restore(self, feeds: Sequence[_Feed]) -> None:
        """Resume from stored bars: each series continues after its latest stored bar, and fills
        the gaps an earlier process recorded and stopped before filling (or, behind the stored
        bars, whose backfill failed); a newest bar from REST inside a recorded gap was stored
        while the series was live."""
        keys = [s.key for f in feeds for s in f.series]
        database = self.database
        if database is None or not keys:
            return

        async def read(call: Callable[..., Any], *args: Any) -> Any:
            # a database briefly away (a PostgreSQL restart, SQLite locked) is waited out, as for
            # writes: failing here stopped the service at a start or a rebalance
            return await retrying(lambda: self.db_call(call, database, *args), what="restore")

        newest = await read(latest_bars, keys)
        unfilled = await read(functools.partial(list_gaps, unfilled=True), keys)
        held = await read(gap_ends_holding, {k: b.open_time for k, b in newest.items() if b.source != "live"})
        for f in feeds:
            for s in f.series:
                bar = newest.get(s.key)
                if bar is not None:
                    mine = [(g.start, g.end) for g in unfilled if g.series == s.key]
                    if mine:  # those whose bars are all stored are only unmarked: no fetch for them
                        done = {(g.start, g.end) for g in await self._settle(s.key, bar.open_time + s.key.step)}
                        mine = [g for g in mine if g not in done]
                    f.session.restore(s.key, bar, mine, gap_end=held.get(s.key))
                    log.info(
                        "resuming after stored bars", extra={"series": str(s.key), "latest": bar.open_time.isoformat()}
                    )

    async def _settle(self, series: SeriesKey, until: datetime) -> list[FeedGap]:
        """Recorded gaps before `until` whose bars are all stored, but never marked filled (the
        run that backfilled them stopped first): filled now, and returned."""
        done = await self.write_gap(series, functools.partial(settle_gaps, until=until), "gaps") or []
        for g in done:
            log.info("feed gap filled", extra={"series": str(series), "start": g.start.isoformat(),
                                               "end": g.end.isoformat(), "bars_missed": g.bars_missed,
                                               "bars_filled": g.bars_missed})
        return list(done)

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
                store = functools.partial(upsert_bars, self.database, [u.bar for u in updates], fence=fence)
                self.bars_written += await retrying(lambda: self.db_call(store), what="bars")
        if self.on_bars is not None:
            await self.on_bars(updates)
        for q in self._subscribers:
            for u in updates:
                await q.put(u)

    async def write_gap(self, series: SeriesKey, call: Callable[..., Any], what: str) -> Any:
        """`call(database, series)` off the loop, as bar stores are (same lock, same retries); None
        without a database or for a series handed to another daemon (its gaps are that one's)."""
        if self.database is None:
            return None
        database = self.database
        async with self._write_lock:
            fence = self.fence() if self.fence is not None else None
            if fence is not None and series not in fence.tokens:
                return None
            return await retrying(lambda: self.db_call(call, database, series), what=what)

    async def run(self) -> None:
        """Every feed until `stop()`; a feed that fails stops the others and raises its error."""
        try:
            async with self._starting:
                await self._restore(self.feeds)
                if self._stop.is_set():
                    return
                for f in self.feeds:
                    self._start(f)
                self.started.set()
            await self._stop.wait()
        finally:
            self._stop.set()  # no feed is added after this
            tasks = list(self._tasks.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for q in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)
        if self._failure is not None:
            raise self._failure

    def _start(self, feed: _Feed) -> None:
        task = asyncio.create_task(feed.run(), name=f"ingest:{feed.spec.exchange}")
        self._tasks[feed] = task
        task.add_done_callback(self._feed_done)

    def _feed_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():  # stopped, or its series all handed on
            return
        if task.exception() is not None and self._failure is None:
            self._failure = task.exception()
        self._stop.set()  # a feed ends by itself only when stopped, or failed

    async def add(self, specs: Sequence[FeedSpec]) -> None:
        """Start ingesting more series (taken over by this daemon) while running: restored from
        the database as at a start, on connections of their own. The running connections keep
        theirs, and their series their bars in progress: a series gained costs the others nothing."""
        feeds = [_Feed(self, sp) for sp in specs if sp.series]
        async with self._starting:
            if self._stop.is_set() or not feeds:
                return
            self.feeds.extend(feeds)
            if not self.started.is_set():  # `run` has not started yet: it starts them with the rest
                return
            await self._restore(feeds)
            for f in feeds:
                if not self._stop.is_set():
                    self._start(f)

    async def drop(self, keys: Collection[SeriesKey]) -> None:
        """Stop ingesting series (handed on to another daemon). Each leaves its connection's
        session, which keeps its other series and their bars in progress; the connection
        subscribes without it the next time it connects (until then its trades are ignored). A
        connection left with no series closes."""
        gone = set(keys)
        for f in [f for f in self.feeds if any(s.key in gone for s in f.series)]:
            f.session.drop(gone)
            f.connection.natives = list(f.session.natives)
            if f.series:
                continue
            self.feeds.remove(f)
            task = self._tasks.pop(f, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # a failure is `run`'s to raise
                    await task
