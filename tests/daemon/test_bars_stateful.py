"""Hypothesis state machine for the bar aggregator: reordered, late and duplicate trades, clock ticks.

Whatever the order, every trade the aggregator accepts (not a duplicate, not too late) is in its
bar, and the last version of each stored bar equals a reference built from the accepted trades
alone: OHLC by (exchange time, arrival), exact volume, count. Closed bars come out once each, in
order; amendments only touch bars already closed; nothing is counted twice or lost from the counts.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from daemon.bars import Aggregator, BarUpdate
from daemon.feeds.base import Trade
from daemon.feeds.fields import us_from_datetime
from db.records import SeriesKey

SERIES = SeriesKey("binance", "BTC-USDT", "1m")
STEP = 60_000_000
BASE = 1_700_000_000_000_000 - 1_700_000_000_000_000 % STEP
ALLOWANCE_S = 150.0
prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2)
sizes = st.decimals(min_value=Decimal(0), max_value=Decimal("50"), places=4)


class AggregatorMachine(RuleBasedStateMachine):
    @initialize(grace=st.sampled_from([0.0, 2.0, 30.0]))
    def start(self, grace: float) -> None:
        self.agg = Aggregator(SERIES, grace_s=grace, late_allowance_s=ALLOWANCE_S)
        self.now = BASE
        self.next_id = 0
        self.sent: list[Trade] = []
        self.accepted: list[tuple[int, Trade]] = []  # (arrival, trade)
        self.latest: dict[int, BarUpdate] = {}
        self.closed_order: list[int] = []
        self.watermark = 0  # newest exchange time seen (trades and clock)
        self.first_bucket: int | None = None

    def _emit(self, ups: list[BarUpdate]) -> None:
        for u in ups:
            start = us_from_datetime(u.bar.open_time)
            assert start % STEP == 0
            if u.kind == "closed":
                assert start not in self.closed_order, "a bar closed twice"
                assert not self.closed_order or start > self.closed_order[-1], "closed out of order"
                self.closed_order.append(start)
            else:
                assert u.kind == "amended" and start in self.closed_order, "amended a bar never closed"
            self.latest[start] = u

    def _add(self, trade: Trade) -> bool:
        st_ = self.agg.stats
        before = (st_.duplicates, st_.late_dropped, st_.unobserved)
        self._emit(self.agg.add(trade))
        self.sent.append(trade)
        self.watermark = max(self.watermark, trade.time_us)
        if (st_.duplicates, st_.late_dropped, st_.unobserved) == before:
            self.accepted.append((len(self.sent), trade))
            return True
        return False

    @rule(offset_s=st.integers(min_value=-400, max_value=90), price=prices, size=sizes)
    def trade(self, offset_s: int, price: Decimal, size: Decimal) -> None:
        """A new trade near the newest time seen: forward, slightly out of order, or late."""
        self.next_id += 1
        t = max(BASE, self.now + offset_s * 1_000_000 + self.next_id)
        self.now = max(self.now, t)
        bucket = t - t % STEP
        # the first trade starts the series; after it a fresh trade is kept if its bar is still open,
        # else unless that bar was never observed (before the first) or ended beyond the allowance
        cursor = self.agg.cursor_us
        if self.first_bucket is None:
            self.first_bucket = bucket
            expected = True
        elif cursor is not None and bucket >= cursor:
            expected = True
        else:
            late_by = max(self.watermark, t) - (bucket + STEP)
            expected = bucket >= self.first_bucket and late_by <= ALLOWANCE_S * 1e6
        accepted = self._add(Trade("binance", "BTC-USDT", "BTCUSDT", str(self.next_id), t, price, size, "buy"))
        assert accepted == expected, (t, bucket, self.watermark)

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(min_value=0))
    def duplicate(self, pick: int) -> None:
        """A trade delivered again (a replay after reconnect): nothing may change."""
        trade = self.sent[pick % len(self.sent)]
        before = {k: u.bar for k, u in self.latest.items()}
        dup_before = self.agg.stats.duplicates + self.agg.stats.late_dropped
        ups = self.agg.add(trade)
        self.sent.append(trade)
        assert not [u for u in ups if u.kind == "amended"], "a duplicate amended a bar"
        self._emit(ups)
        if any(t is trade for _, t in self.accepted):
            assert self.agg.stats.duplicates + self.agg.stats.late_dropped == dup_before + 1
        for k, bar in before.items():
            assert self.latest[k].bar == bar

    @rule(seconds=st.integers(min_value=0, max_value=200))
    def tick(self, seconds: int) -> None:
        self.now += seconds * 1_000_000
        self.watermark = max(self.watermark, self.now)
        self._emit(self.agg.advance(self.now))

    @invariant()
    def counts_add_up(self) -> None:
        if not hasattr(self, "agg"):
            return
        s = self.agg.stats
        assert s.trades == len(self.sent)
        assert s.trades == len(self.accepted) + s.duplicates + s.late_dropped + s.unobserved

    @invariant()
    def bars_are_consistent(self) -> None:
        for u in getattr(self, "latest", {}).values():
            b = u.bar
            assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
            assert b.volume >= 0 and (b.trade_count or 0) >= 0

    def teardown(self) -> None:
        if not hasattr(self, "agg"):
            return
        self._emit(self.agg.advance(self.now + 10 * STEP))
        groups: dict[int, list[tuple[int, Trade]]] = defaultdict(list)
        for arrival, t in self.accepted:
            groups[t.time_us - t.time_us % STEP].append((arrival, t))
        for start, items in groups.items():
            by_time = sorted(items, key=lambda x: (x[1].time_us, x[0]))
            want = (
                by_time[0][1].price,
                max(t.price for _, t in items),
                min(t.price for _, t in items),
                by_time[-1][1].price,
                sum((t.size for _, t in items), Decimal(0)),
                len(items),
            )
            b = self.latest[start].bar
            assert (b.open, b.high, b.low, b.close, b.volume, b.trade_count) == want, start
        # every other stored bar is flat at the close before it
        for start, u in self.latest.items():
            if start not in groups:
                b = u.bar
                assert b.trade_count == 0 and b.volume == 0 and b.open == b.high == b.low == b.close


TestAggregatorMachine = AggregatorMachine.TestCase
TestAggregatorMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
