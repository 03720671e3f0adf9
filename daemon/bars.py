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

Hot path (`add_text`): the bar in progress keeps its prices as the exchange's text plus a float and
its sizes as a list of text; Decimals are built once, at close. This is exact: float() rounds
correctly and monotonically, so a float strictly above (below) another proves the decimal above
(below); only equal floats with different text are compared as Decimals (`_tie`). The volume is
the same left-to-right exact Decimal sum as before, done at close in C (`functools.reduce`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from functools import reduce
from typing import Any, Literal

from daemon.feeds.fields import EXACT, datetime_from_us, us
from daemon.feeds.records import Trade
from db.records import Bar, SeriesKey, interval_seconds

UpdateKind = Literal["closed", "amended", "backfilled"]

_VOLUME_ADD = EXACT.add
#: A price or size as the hot path carries it: the exchange's plain decimal text (or a Decimal).
Num = Any
_ZERO = Decimal(0)
#: The ids of a block from an exchange that sends none (shared: never mutated).
_NO_IDS: set[object] = set()
#: The updates of a call that closed nothing (shared: never mutated).
NO_UPDATES: list[BarUpdate] = []

#: More empty intervals than this in one jump are not filled with flat bars: such a jump is a
#: garbled timestamp or a dead market, and a million flat bars would help neither.
MAX_FLAT_FILL = 20_000


@dataclass(frozen=True, slots=True)
class BarUpdate:
    """A bar the ingest publishes: newly closed, amended by a late trade, or fetched by backfill.
    `range_end`: a backfilled bar's REST range ends there (exclusive; the bar in progress when it
    was asked for), so a consumer can tell how far behind the present the bar is whichever page
    of the range brought it; None otherwise (and for the feed clock's open-ended polls)."""

    bar: Bar
    kind: UpdateKind
    range_end: datetime | None = None


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
        return asdict(self)  # not `__slots__`: a class compiled by mypyc has none


class _Acc:
    """A bar being built (or kept for amendments). `count == 0` means flat at `close`.

    Open and close follow exchange time, ties by arrival: a trade becomes the open only if it is
    strictly earlier than the open so far, and the close if it is at or after the close so far.
    """

    __slots__ = ("close", "close_t", "count", "high", "ids", "low", "open", "open_t", "start", "volume")

    def __init__(self, start: int, price: Decimal, first: tuple[int, Decimal, object] | None = None) -> None:
        """Flat at `price`, or holding its `first` trade (time, size, id)."""
        self.start = start
        self.open = self.high = self.low = self.close = price
        if first is None:
            self.volume = _ZERO
            self.count = 0
            self.open_t = self.close_t = 0
            self.ids: set[object] = set()
        else:
            t, self.volume, tid = first
            self.count = 1
            self.open_t = self.close_t = t
            self.ids = set() if tid is None else {tid}

    def add(self, t: int, price: Decimal, size: Decimal, tid: object) -> bool:
        """Add a trade; False when its id was already counted in this bar."""
        if tid is not None:
            ids = self.ids
            if tid in ids:
                return False
            ids.add(tid)
        if self.count == 0:
            self.open = self.high = self.low = self.close = price
            self.volume = size
            self.open_t = self.close_t = t
            self.count = 1
            return True
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        if t < self.open_t:
            self.open_t, self.open = t, price
        if t >= self.close_t:
            self.close_t, self.close = t, price
        self.volume = _VOLUME_ADD(self.volume, size)
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
        self.step_us = us(interval_seconds(series.interval))
        self.grace_us = us(grace_s)
        self.allowance_us = us(late_allowance_s)
        self.stats = AggregatorStats()
        #: interrupted and not resumed: trades are counted as unobserved, nothing closes
        self.suspended = False
        self._cursor: int | None = None  # open time of the earliest bar not yet closed
        # the bar at the cursor while it has trades (`_n` > 0): prices as text + float, sizes as text
        self._n = 0
        #: [_lo, _hi): the interval of the bar in progress while it has trades, else empty
        self._lo = 0
        self._hi = 0
        self._o: Num = None
        self._h: Num = None
        self._l: Num = None
        self._c: Num = None
        self._hf = 0.0
        self._lf = 0.0
        self._ot = 0
        self._ct = 0
        self._sizes: list[Num] = []
        self._ids: set[object] = set()
        self._last_close: Decimal | None = None
        self._closed: OrderedDict[int, _Acc] = OrderedDict()
        self._watermark = 0
        #: end (µs) of the newest bar closed so far
        self.closed_until_us: int | None = None
        #: the clock must reach this before `advance` closes anything (cursor + step + grace)
        self.next_close_us = 0

    # --- state ---------------------------------------------------------------------------------
    @property
    def cursor_us(self) -> int | None:
        """Open time (µs) of the earliest bar not closed yet; None before anything was observed."""
        return self._cursor

    @property
    def last_close(self) -> Decimal | None:
        return self._last_close

    def floor(self, t_us: int) -> int:
        return t_us - t_us % self.step_us

    def ceil(self, t_us: int) -> int:
        return -((-t_us) // self.step_us) * self.step_us

    def interrupt(self) -> None:
        """The stream broke: the bar in progress is partial, so it is dropped, not closed."""
        self._drop_live()
        self.suspended = True

    def resume(self, observed_from_us: int, last_close: Decimal | None = None) -> None:
        """The stream is complete from `observed_from_us` on; bars start at the next boundary.

        `last_close` (from stored or backfilled bars) seeds flat bars until the first trade.
        """
        self.suspended = False
        self._drop_live()
        self._set_cursor(self.ceil(observed_from_us))
        if last_close is not None:
            self._last_close = last_close

    def set_last_close(self, close: Decimal) -> None:
        """Backfill settled the bars before the cursor: flat bars continue from their close."""
        self._last_close = close

    def current_bar(self) -> Bar | None:
        """The bar still in progress (not closed), for display only."""
        acc = self._live()
        return None if acc is None else self._bar(acc)

    # --- input ---------------------------------------------------------------------------------
    def add(self, trade: Trade) -> list[BarUpdate]:
        """Add one trade; returns the bars it closed or amended, oldest first."""
        return self.add_row(trade.time_us, trade.price, trade.size, trade.trade_id)

    def add_row(self, t: int, price: Decimal, size: Decimal, tid: object) -> list[BarUpdate]:
        """A trade's fields as Decimals, no record. Duplicate ids are per bar."""
        return self.add_text(t, price, float(price), size, tid)

    def add_text(self, t: int, p: Num, pf: float, q: Num, tid: object) -> list[BarUpdate]:
        """The hot path: price `p` as validated plain decimal text (or a Decimal) with `pf` =
        float(p), size `q` likewise. Most trades land in the bar in progress and end here."""
        if self._lo <= t < self._hi:  # the bar in progress (set only while it has trades)
            self.stats.trades += 1
            if tid is not None:
                ids = self._ids
                if tid in ids:
                    self.stats.duplicates += 1
                    if t > self._watermark:
                        self._watermark = t
                    return NO_UPDATES
                ids.add(tid)
            if pf >= self._hf:
                if pf > self._hf:
                    self._hf, self._h = pf, p
                elif p != self._h:
                    self._tie(p)
            elif pf <= self._lf:
                if pf < self._lf:
                    self._lf, self._l = pf, p
                elif p != self._l:
                    self._tie(p)
            if t < self._ot:
                self._ot, self._o = t, p
            if t >= self._ct:  # `_ct` is the bar's newest time: the watermark takes it in `_fold`
                self._ct, self._c = t, p
            self._sizes.append(q)
            self._n += 1
            return NO_UPDATES
        self.stats.trades += 1
        return self._add_other(t, p, pf, q, tid, t - t % self.step_us)

    @property
    def bar_start_us(self) -> int:
        """Open time of the bar in progress while it has trades (0: none)."""
        return self._lo

    @property
    def bar_end_us(self) -> int:
        """End of the bar in progress while it has trades (0: none): trades before it join it."""
        return self._hi

    def fits_block(self, tmin: int, tmax: int, ids: list[object] | None) -> set[object] | None:
        """Trades with times (µs) in [tmin, tmax] and these ids (None: the exchange sends none;
        else no None among them): their ids as a set for `add_block` when all of them land in
        the bar in progress as new trades; None when any would take another path."""
        if not (self._lo <= tmin and tmax < self._hi):
            return None
        if ids is None:
            return _NO_IDS
        block = set(ids)
        return block if len(block) == len(ids) and self._ids.isdisjoint(block) else None

    def first_duplicate(self, ids: list[object]) -> int:
        """Index of the first id already in the bar in progress or earlier in `ids` (len(ids):
        none), where `fits_block` refused a block."""
        seen = set(self._ids)
        for k, tid in enumerate(ids):
            if tid in seen:
                return k
            seen.add(tid)
        return len(ids)

    def add_block(self, first: int, last: int, ps: list[Num], keys: list[Any], qs: list[Num], ids: set[object]) -> None:
        """Trades in time order, as columns, that `fits_block` accepted (`ids`: its answer),
        the first at `first` µs and the last at `last`: the state `add_text` one by one would
        leave, computed per column in C. Open is the first trade (the first at the earliest
        time), close the last; high (low) is the first text of the greatest (least) value, by
        `keys` (floats, or the texts where `fields.hot_columns` proved text order is value
        order), settled as Decimals where equal keys are different texts."""
        n = len(ps)
        self.stats.trades += n
        self._ids |= ids
        k = max(keys)
        f = k if type(k) is float else float(k)
        if f >= self._hf:
            self._h = self._extreme(keys, ps, k, self._h if f == self._hf else None, 1)
            self._hf = f
        k = min(keys)
        f = k if type(k) is float else float(k)
        if f <= self._lf:
            self._l = self._extreme(keys, ps, k, self._l if f == self._lf else None, -1)
            self._lf = f
        if first < self._ot:
            self._ot, self._o = first, ps[0]
        if last >= self._ct:
            self._ct, self._c = last, ps[-1]
        self._sizes.extend(qs)
        self._n += n

    @staticmethod
    def _extreme(keys: list[Any], ps: list[Num], k: Any, held: Num, sign: int) -> Num:
        """The first text of the greatest (`sign` 1) or least (-1) value among the texts whose
        key is `k`, after `held` (the bar's extreme so far, when its float equals theirs)."""
        count = keys.count(k)
        i = keys.index(k)
        best = ps[i] if held is None else held
        if count == 1 and best == ps[i]:
            return best
        texts = [ps[i]]
        for _ in range(count - 1):
            i = keys.index(k, i + 1)
            texts.append(ps[i])
        bd = Decimal(best)
        for p in texts:
            if p != best:
                d = Decimal(p)
                if (d > bd) if sign > 0 else (d < bd):
                    best, bd = p, d
        return best

    def _tie(self, p: Num) -> None:
        """Equal floats, different text: decide high and low as Decimals (as `_Acc.add` does)."""
        d = Decimal(p)
        if d > Decimal(self._h):
            self._h = p
        elif d < Decimal(self._l):
            self._l = p

    def _add_other(self, t: int, p: Num, pf: float, q: Num, tid: object, start: int) -> list[BarUpdate]:
        """A trade outside the bar in progress: suspended, first, late, or opening a later bar."""
        if self.suspended:
            self.stats.unobserved += 1
            return NO_UPDATES
        self._fold()
        if t > self._watermark:
            self._watermark = t
        updates = NO_UPDATES
        if start != self._cursor:
            if self._cursor is None:
                self._set_cursor(start)
            elif start < self._cursor:
                return self._late(t, p, q, tid, start)
            else:
                updates = self._close_through(start)
        # the first trade of the bar at the cursor
        self._n = 1
        self._lo = start
        self._hi = start + self.step_us
        self._o = self._h = self._l = self._c = p
        self._hf = self._lf = pf
        self._ot = self._ct = t
        self._sizes = [q]
        self._ids = set() if tid is None else {tid}
        return updates

    def _fold(self) -> None:
        """Take the bar in progress's newest time into the watermark (the hot path leaves it in
        `_ct`, one store less per trade); before anything reads the watermark."""
        if self._n and self._ct > self._watermark:
            self._watermark = self._ct

    def _drop_live(self) -> None:
        self._n = 0
        self._lo = self._hi = 0

    def _live(self) -> _Acc | None:
        """The bar in progress as an `_Acc` of exact Decimals (None: no trade yet)."""
        if not self._n:
            return None
        acc = _Acc(self._cursor or 0, Decimal(self._o))
        acc.high, acc.low, acc.close = Decimal(self._h), Decimal(self._l), Decimal(self._c)
        sizes = self._sizes
        acc.volume = reduce(_VOLUME_ADD, map(Decimal, sizes)) if len(sizes) > 1 else Decimal(sizes[0])
        acc.count = self._n
        acc.open_t, acc.close_t = self._ot, self._ct
        acc.ids = self._ids
        return acc

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
        if now_us < self.next_close_us or self.suspended or self._cursor is None:
            return NO_UPDATES
        target = self.floor(now_us - self.grace_us)
        if target <= self._cursor:
            return NO_UPDATES
        return self._close_through(target)

    def finish(self) -> list[BarUpdate]:
        """End of input (a replay, a capture, a simulator run that is over): close the bar in
        progress, as its interval will see no more trades. Nothing closes while suspended."""
        if self.suspended or self._cursor is None or not self._n:
            return NO_UPDATES
        return self._close_through(self._cursor + self.step_us)

    def _set_cursor(self, cursor: int) -> None:
        self._cursor = cursor
        self.next_close_us = cursor + self.step_us + self.grace_us

    # --- internals -----------------------------------------------------------------------------
    def _close_through(self, target: int) -> list[BarUpdate]:
        """Close all bars opening before `target` (the cursor moves to `target`)."""
        assert self._cursor is not None
        step = self.step_us
        self._fold()
        acc = self._live()
        self._drop_live()
        if acc is not None and target - self._cursor == step:  # the usual case: one bar, with trades
            out = [self._close(acc)]
            self._set_cursor(target)
            self._prune()
            return out
        out = []
        if (target - self._cursor) // step > MAX_FLAT_FILL:
            if acc is not None:
                out.append(self._close(acc))
            self.stats.flat_skipped += (target - self._cursor) // step - 1
            self._set_cursor(target)
            self._prune()
            return out
        cursor = self._cursor
        while cursor < target:
            if acc is not None:
                out.append(self._close(acc))
            elif self._last_close is not None:
                self.stats.flat_bars += 1
                out.append(self._close(_Acc(cursor, self._last_close)))
            cursor += step
            acc = None
        self._set_cursor(cursor)
        self._prune()
        return out

    def _close(self, acc: _Acc) -> BarUpdate:
        self.stats.bars_closed += 1
        self._last_close = acc.close
        self._closed[acc.start] = acc
        self.closed_until_us = acc.start + self.step_us
        return BarUpdate(self._bar(acc), "closed")

    def _prune(self) -> None:
        horizon = self._watermark - self.allowance_us - self.step_us
        closed = self._closed
        while closed:
            first = next(iter(closed))
            if first >= horizon:
                break
            del closed[first]

    def _late(self, t: int, p: Num, q: Num, tid: object, start: int) -> list[BarUpdate]:
        acc = self._closed.get(start)
        if acc is None or self._watermark - (start + self.step_us) > self.allowance_us:
            self.stats.late_dropped += 1
            return []
        price, size = Decimal(p), Decimal(q)
        before = acc.values()
        if not acc.add(t, price, size, tid):
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
            datetime_from_us(acc.start),
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
        ends = agg.advance(until_us) if until_us is not None else agg.finish()
        for u in ends:
            latest[u.bar.open_time] = u.bar
    return [latest[k] for k in sorted(latest)]
