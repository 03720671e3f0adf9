"""Trades in, closed bars out: the pure aggregator of one series.

Bars are UTC-aligned, left-closed `[t, t+step)` and stamped with their open time. OHLC follow the
trades' exchange timestamps (ties: arrival order), volume is the exact Decimal sum.

Closing: a bar closes when a trade of a later interval arrives, or when `advance(now)` says the
exchange clock passed its end plus `grace`. An interval with no trades closes as a flat bar at the
previous close (none before the first trade). A trade for a bar already closed amends and
re-emits it if it is at most `late_allowance` behind the newest time seen; flat bars that followed
the amended bar are re-emitted with its new close. Later trades, duplicate trade ids and trades of
intervals the stream did not observe are counted and dropped.

Observation: bars are only built from trades for intervals the stream saw from their start. After
`interrupt()` (a disconnect) the partial bar is discarded and nothing is built until `resume(t)`,
which starts at the first boundary at or after `t`; what lies between is the backfill's job.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from daemon.feeds.base import EXACT, Trade
from db.records import Bar, SeriesKey, interval_seconds

UpdateKind = Literal["closed", "amended", "backfilled"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: More empty intervals than this in one jump are not filled with flat bars: such a jump is a
#: garbled timestamp or a dead market, and a million flat bars would help neither.
MAX_FLAT_FILL = 20_000


@dataclass(frozen=True, slots=True)
class BarUpdate:
    """A bar the ingest publishes: newly closed, amended by a late trade, or fetched by backfill."""

    bar: Bar
    kind: UpdateKind


@dataclass(slots=True)
class AggregatorStats:
    trades: int = 0
    duplicates: int = 0
    late_amended: int = 0
    late_dropped: int = 0
    unobserved: int = 0
    bars_closed: int = 0
    flat_bars: int = 0
    flat_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Acc:
    """A bar being built (or kept for amendments). `count == 0` means flat at `close`."""

    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    count: int
    open_key: tuple[int, int]
    close_key: tuple[int, int]
    ids: set[str] = field(default_factory=set)

    @classmethod
    def flat(cls, start: int, price: Decimal) -> _Acc:
        return cls(start, price, price, price, price, Decimal(0), 0, (0, 0), (0, 0))

    def add(self, trade: Trade, seq: int) -> bool:
        """Add a trade; False when its id was already counted in this bar."""
        tid = trade.trade_id
        if tid is not None:
            if tid in self.ids:
                return False
            self.ids.add(tid)
        p = trade.price
        key = (trade.time_us, seq)
        if self.count == 0:
            self.open = self.high = self.low = self.close = p
            self.volume = trade.size
            self.open_key = self.close_key = key
            self.count = 1
            return True
        if p > self.high:
            self.high = p
        elif p < self.low:
            self.low = p
        if key < self.open_key:
            self.open_key, self.open = key, p
        if key > self.close_key:
            self.close_key, self.close = key, p
        self.volume = EXACT.add(self.volume, trade.size)
        self.count += 1
        return True

    def values(self) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal, int]:
        return self.open, self.high, self.low, self.close, self.volume, self.count


class Aggregator:
    """One series' bars. Pure and synchronous: the ingest shell feeds it and persists what it returns."""

    def __init__(
        self,
        series: SeriesKey,
        *,
        grace_s: float = 2.0,
        late_allowance_s: float = 300.0,
    ) -> None:
        self.series = series
        self.step_us = interval_seconds(series.interval) * 1_000_000
        self.grace_us = int(grace_s * 1_000_000)
        self.allowance_us = int(late_allowance_s * 1_000_000)
        self.stats = AggregatorStats()
        self._suspended = False
        self._cursor: int | None = None  # open time of the earliest bar not yet closed
        self._acc: _Acc | None = None  # the bar at the cursor, once it has a trade
        self._last_close: Decimal | None = None
        self._closed: OrderedDict[int, _Acc] = OrderedDict()
        self._watermark = 0
        self._seq = 0

    # --- state ---------------------------------------------------------------------------------
    @property
    def cursor_us(self) -> int | None:
        """Open time (µs) of the earliest bar not closed yet; None before anything was observed."""
        return self._cursor

    @property
    def last_close(self) -> Decimal | None:
        return self._last_close

    @property
    def suspended(self) -> bool:
        return self._suspended

    def floor(self, t_us: int) -> int:
        return t_us - t_us % self.step_us

    def ceil(self, t_us: int) -> int:
        return -((-t_us) // self.step_us) * self.step_us

    def interrupt(self) -> None:
        """The stream broke: the bar in progress is partial, so it is dropped, not closed."""
        self._acc = None
        self._suspended = True

    def resume(self, observed_from_us: int, last_close: Decimal | None = None) -> None:
        """The stream is complete from `observed_from_us` on; bars start at the next boundary.

        `last_close` (from stored or backfilled bars) seeds flat bars until the first trade.
        """
        self._suspended = False
        self._acc = None
        self._cursor = self.ceil(observed_from_us)
        if last_close is not None:
            self._last_close = last_close

    def set_last_close(self, close: Decimal) -> None:
        """Backfill settled the bars before the cursor: flat bars continue from their close."""
        self._last_close = close

    def current_bar(self) -> Bar | None:
        """The bar still in progress (not closed), for display only."""
        return None if self._acc is None else self._bar(self._acc)

    # --- input ---------------------------------------------------------------------------------
    def add(self, trade: Trade) -> list[BarUpdate]:
        """Add one trade; returns the bars it closed or amended, oldest first."""
        self.stats.trades += 1
        if self._suspended:
            self.stats.unobserved += 1
            return []
        t = trade.time_us
        if t > self._watermark:
            self._watermark = t
        start = t - t % self.step_us
        if self._cursor is None:
            self._cursor = start
        updates: list[BarUpdate] = []
        if start < self._cursor:
            return self._late(trade, start)
        if start > self._cursor:
            updates = self._close_through(start)
        self._seq += 1
        acc = self._acc
        if acc is None:
            acc = self._acc = _Acc.flat(start, trade.price)
        if not acc.add(trade, self._seq):
            self.stats.duplicates += 1
        return updates

    def add_many(self, trades: list[Trade] | tuple[Trade, ...]) -> list[BarUpdate]:
        out: list[BarUpdate] = []
        for tr in trades:
            if res := self.add(tr):
                out.extend(res)
        return out

    def advance(self, now_us: int) -> list[BarUpdate]:
        """The exchange clock reads `now_us`: close every bar whose end + grace has passed."""
        if now_us > self._watermark:
            self._watermark = now_us
        if self._suspended or self._cursor is None:
            return []
        target = self.floor(now_us - self.grace_us)
        if target <= self._cursor:
            return []
        return self._close_through(target)

    # --- internals -----------------------------------------------------------------------------
    def _close_through(self, target: int) -> list[BarUpdate]:
        """Close all bars opening before `target` (the cursor moves to `target`)."""
        assert self._cursor is not None
        out: list[BarUpdate] = []
        step = self.step_us
        if (target - self._cursor) // step > MAX_FLAT_FILL:
            if self._acc is not None:
                out.append(self._close(self._acc))
            self.stats.flat_skipped += (target - self._cursor) // step - 1
            self._cursor, self._acc = target, None
            self._prune()
            return out
        cursor = self._cursor
        while cursor < target:
            acc = self._acc
            if acc is not None:
                out.append(self._close(acc))
            elif self._last_close is not None:
                self.stats.flat_bars += 1
                out.append(self._close(_Acc.flat(cursor, self._last_close)))
            cursor += step
            self._acc = None
        self._cursor = cursor
        self._prune()
        return out

    def _close(self, acc: _Acc) -> BarUpdate:
        self.stats.bars_closed += 1
        self._last_close = acc.close
        self._closed[acc.start] = acc
        return BarUpdate(self._bar(acc), "closed")

    def _prune(self) -> None:
        horizon = self._watermark - self.allowance_us - self.step_us
        closed = self._closed
        while closed:
            first = next(iter(closed))
            if first >= horizon:
                break
            del closed[first]

    def _late(self, trade: Trade, start: int) -> list[BarUpdate]:
        acc = self._closed.get(start)
        if acc is None or self._watermark - (start + self.step_us) > self.allowance_us:
            self.stats.late_dropped += 1
            return []
        before = acc.values()
        self._seq += 1
        if not acc.add(trade, self._seq):
            self.stats.duplicates += 1
            return []
        self.stats.late_amended += 1
        out: list[BarUpdate] = []
        if acc.values() != before:
            out.append(BarUpdate(self._bar(acc), "amended"))
        # flat bars that followed take the amended close
        close = acc.close
        chain_to_end = True
        for s, nxt in self._closed.items():
            if s <= start:
                continue
            if nxt.count:
                chain_to_end = False
                break
            if nxt.close != close:
                nxt.open = nxt.high = nxt.low = nxt.close = close
                out.append(BarUpdate(self._bar(nxt), "amended"))
        if chain_to_end:
            self._last_close = close
        return out

    def _bar(self, acc: _Acc) -> Bar:
        s = self.series
        return Bar(
            s.exchange,
            s.symbol,
            s.interval,
            _EPOCH + timedelta(microseconds=acc.start),
            acc.open,
            acc.high,
            acc.low,
            acc.close,
            acc.volume,
            acc.count,
            "live",
        )


def aggregate(series: SeriesKey, trades: list[Trade], *, until_us: int | None = None) -> list[Bar]:
    """All bars of a finished trade sequence (the last bar closes at `until_us`, default its end)."""
    agg = Aggregator(series, grace_s=0, late_allowance_s=10**9)
    latest: dict[datetime, Bar] = {}
    for u in agg.add_many(trades):
        latest[u.bar.open_time] = u.bar
    if trades:
        end = until_us if until_us is not None else agg.ceil(max(t.time_us for t in trades) + 1)
        for u in agg.advance(end):
            latest[u.bar.open_time] = u.bar
    return [latest[k] for k in sorted(latest)]
