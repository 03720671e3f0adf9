"""The sans-I/O core of one exchange connection: frames and clock ticks in, actions out.

In the style of python-websockets' `protocol.py`: `FeedSession` owns everything one connection
*decides* - subscription acknowledgements, the series' bar aggregators, what is stored and what
must be backfilled, when the stream is stale, what a malformed frame counts as - and does no I/O.
No sockets, no database, no asyncio: the ingest shell moves bytes and executes the actions
(`Publish` bars, fetch a `Backfill` range, `Reconnect`, log a `Rejected` frame, record a
`GapDetected` and later its `GapFilled`) and reports their outcome back (`backfilled`,
`backfill_failed`).

States: CONNECTING (no socket) -> SUBSCRIBING (socket up, acknowledgements outstanding) -> LIVE
(bars built from trades) or BACKFILLING (live, with REST ranges still to fetch); STALE (no frame
for `stall_timeout_s`: a reconnect is asked for) and back to CONNECTING on every disconnect;
CLOSED at the end.

Refused subscriptions: an exchange that refuses a symbol (an unknown, delisted or halted one)
answers in its own way; the protocol turns it into a refusal (`ParseResult.refused`), naming the
symbol or not (then it answers the oldest request outstanding: each subscribe message is a
request with its own answers; one naming no symbol for several is asked again one by one).
REST refusals count too (an exchange that accepts any symbol on the websocket and stays silent
says so only there). A refused symbol's series stay suspended (no bars, no flat bars, no
backfill), are reported once per connection (`SubscriptionRefused`), and are asked for again
after `refused_retry_s`, doubling to `refused_retry_max_s` (on the open connection, or by the
next connection); the others are not disturbed. Acknowledged later, the series resumes alone.

What is known and what is backfilled, per series:
- `next_needed_us`: open time of the first bar not stored yet, or not proven complete (from the
  database at start: the newest stored bar built from trades is not).
- Once subscribed, each aggregator resumes at the first boundary after that moment (`live_from`);
  the interval in progress is partial and is never built from trades. Bars in [next_needed, now)
  are fetched from REST at once, and the partial interval as soon as it is over, before any live
  bar is published, so bars arrive in order.
- On disconnect, bars that ended (+ grace) before the last frame are closed, the partial one is
  dropped and the aggregator waits for the next subscription. While down, closed bars come from
  REST every `rest_poll_s`: with the wall clock up to now; with the feed clock (simulators,
  replays) whatever closed candles the exchange serves - so the final bars of a run that ends are
  stored too.
- A gap is what a reconnect cost the live stream: when a series that was live resumes, the bars
  opening in [first bar not proven complete at the disconnect (no earlier than the previous live
  start), new live start) were not built from trades (`GapDetected`, before the backfills that
  cover it). Once a backfill request overlapping it has brought `next_needed` to its end, it is
  `GapFilled` (the shell counts what was stored). A restart is the same: a series `restore`d
  from a latest stored bar built from trades missed the bars from that bar's end to its first
  live start (none where the live stream starts there, or the stored bar is newer), and that
  bar itself is fetched again (not proven complete, as at a disconnect; not a gap). Gaps an
  earlier process recorded and did not fill are restored too: filled here, and their bars are
  not missed again. The first start's backfill (nothing stored, or only imported or backfilled
  history) is history, not a gap; a failed backfill leaves its gap open until a retry completes it.

A backfill needed in the middle of a frame suspends the frame: its remaining trades are applied
after the shell reports the backfill's outcome, so backfilled bars (and their close, which seeds
flat bars) always come before the live bars that follow them.

Clock: `received` is the exchange clock in seconds at receipt (wall time live, the simulator's
clock in tests); bars close by it. `wall_clock=False` uses only times the feed carries (trades,
timed heartbeats): nothing closes while a feed is silent.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from daemon.bars import Aggregator, BarUpdate
from daemon.feeds.base import (
    ACK,
    HEARTBEAT,
    MESSAGE_KINDS,
    NO_ROWS,
    OTHER,
    TRADES,
    Block,
    ExchangeProtocol,
    HotRow,
    ParseResult,
)
from daemon.feeds.fields import US_PER_S, datetime_from_us, us, us_from_clock, us_from_datetime
from db.records import Bar, SeriesKey, interval_seconds

#: The forecaster's window: start-up backfill fetches at least this many bars.
MIN_HISTORY_BARS = 256
#: Without acknowledgements for this long after connecting, treat the subscription as live.
ACK_TIMEOUT_S = 10.0
#: A clock reading beyond any bar close (no aggregator is live).
_NEVER = 1 << 62
_INF = float("inf")
#: A block stretch shorter than this goes through `message` frame by frame (cheaper).
MIN_BLOCK = 8
#: Malformed frames logged per reason before logging only every 1000th.
LOG_FIRST = 5
#: A refused symbol is asked for again after this long, doubling up to the maximum.
REFUSED_RETRY_S = 60.0
REFUSED_RETRY_MAX_S = 1800.0


def frame_rows(block: Block, f: int) -> list[HotRow]:
    """The hot rows `fast_scan` gives for frame `f` of a block (sides aside)."""
    starts = block.starts
    if starts is None:
        return [row(block, f)]
    return [row(block, k) for k in range(starts[f], starts[f + 1])]


def row(block: Block, k: int) -> HotRow:
    """Trade `k` of a block as the hot row `fast_scan` gives for its frame (side aside)."""
    key = block.keys[k]
    p = block.prices[k]
    tid = None if block.ids is None else block.ids[k]
    return (
        block.natives[k],
        tid,
        block.clock.us(block.times[k]),
        p,
        key if type(key) is float else float(p),
        block.sizes[k],
        None,
    )


class State(Enum):
    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    LIVE = "live"
    STALE = "stale"
    BACKFILLING = "backfilling"
    CLOSED = "closed"


# --- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """Store these bar updates (then hand them on), in this order."""

    updates: list[BarUpdate]


@dataclass(frozen=True, slots=True)
class Backfill:
    """Fetch candles of `series` opening in [start_us, end_us) and report each page back.

    `open_ended`: the feed clock cannot tell which bars are over, so store what the exchange
    serves as closed and continue after the last candle returned."""

    index: int
    series: SeriesKey
    native: str
    start_us: int
    end_us: int
    final: bool = False
    open_ended: bool = False
    #: a gap [start, end) recorded earlier that this request fetches again, behind the stored
    #: bars (a backfill that failed before live bars were stored past it): filled once complete
    hole: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Drop the connection (the exchange asked for it, or the stream is stale)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame was malformed or an exchange error: log it (the count is already taken)."""

    kind: str
    reason: str
    count: int
    text: str | bytes


@dataclass(frozen=True, slots=True)
class GapDetected:
    """After a reconnect or restart, the live stream missed the bars of `series` opening in
    [start_us, end_us): record the gap (the backfills that fill it follow)."""

    series: SeriesKey
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class GapFilled:
    """The backfill covering the gap [start_us, end_us) of `series` is stored: count what it holds."""

    series: SeriesKey
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Send these subscribe messages on the open connection (nothing if it is down: the next
    connection asks for what it needs)."""

    messages: list[str]


@dataclass(frozen=True, slots=True)
class SubscriptionRefused:
    """The exchange refused `native` (its series suspended): `reason` is the exchange's own.
    `log`: the first refusal of it on this connection (say it once); asked again in `retry_in_s`."""

    series: tuple[SeriesKey, ...]
    native: str
    reason: str
    retry_in_s: float
    log: bool


@dataclass(frozen=True, slots=True)
class SubscriptionAccepted:
    """A symbol refused before is subscribed now: its series resume."""

    series: tuple[SeriesKey, ...]
    native: str


Action = (
    Publish | Backfill | Reconnect | Rejected | GapDetected | GapFilled | Subscribe | SubscriptionRefused
    | SubscriptionAccepted
)
NO_ACTIONS: list[Action] = []


@dataclass(slots=True)
class FeedStats:
    """Counters of one exchange feed (the shell exports them as Prometheus metrics)."""

    #: frames per kind (a plain dict of every kind: the per-frame count is the cheapest there is)
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESSAGE_KINDS, 0))
    malformed: Counter[str] = field(default_factory=Counter)
    trades: int = 0
    #: trades taken in blocks (`FeedSession.messages`): how much of the load takes the batched path
    block_trades: int = 0
    unknown_symbol: int = 0
    future_trades: int = 0
    backfilled_bars: int = 0
    backfill_failures: int = 0
    subscriptions: int = 0
    stale: int = 0
    #: refusals of a subscription (websocket answers and REST "unknown symbol" answers)
    refusals: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": {k: n for k, n in self.messages.items() if n},
            "malformed": dict(self.malformed),
            "trades": self.trades,
            "block_trades": self.block_trades,
            "unknown_symbol": self.unknown_symbol,
            "future_trades": self.future_trades,
            "backfilled_bars": self.backfilled_bars,
            "backfill_failures": self.backfill_failures,
            "subscriptions": self.subscriptions,
            "stale": self.stale,
            "refusals": self.refusals,
        }


@dataclass(slots=True)
class SeriesState:
    """One series of the connection: its aggregator and what is stored of it."""

    key: SeriesKey
    native: str
    agg: Aggregator
    step_us: int
    next_needed_us: int | None = None
    #: [next_needed, live_from) still to fetch; live_from is the first bar built from trades.
    pending_until_us: int | None = None
    retry_at: float = 0.0
    #: first bar built from trades on the latest subscription (None: never live)
    live_from_us: int | None = None
    #: first bar the live stream missed since it went down, or since the stored bars end at a
    #: restart (None: nothing missed, or nothing live or stored before)
    missed_from_us: int | None = None
    #: gaps [start, end) detected and not filled yet, oldest first
    gaps: list[tuple[int, int]] = field(default_factory=list)
    #: recorded gaps [start, end) not filled, behind the stored bars: fetched again once subscribed
    holes: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SessionOptions:
    grace_s: float = 2.0
    late_allowance_s: float = 300.0
    max_future_s: float = 60.0
    backfill_days: float = 30.0
    stall_timeout_s: float = 30.0
    backfill_retry_s: float = 30.0
    rest_poll_s: float = 10.0
    ack_timeout_s: float = ACK_TIMEOUT_S
    refused_retry_s: float = REFUSED_RETRY_S
    refused_retry_max_s: float = REFUSED_RETRY_MAX_S
    #: candles one REST page returns (open-ended windows are this long)
    max_candles: int = 300


@dataclass(slots=True)
class _Request:
    """One subscribe message sent: its natives and the answers still due."""

    natives: tuple[str, ...]
    answers: int
    #: sent on a live connection for refused symbols (their acknowledgement resumes them)
    retry: bool = False
    #: natives this request's answers refused
    refused: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Refusal:
    """A symbol the exchange refused: its reason, refusals in a row, when to ask again."""

    reason: str
    count: int
    retry_at: float
    #: seconds from the last refusal to `retry_at`
    delay_s: float


class FeedSession:
    """One connection's decisions. Every input returns the actions to execute, in order.

    `received` arguments are exchange-clock seconds (None with the feed clock); `mono` arguments
    are monotonic seconds, for timeouts and retries only.
    """

    def __init__(
        self,
        protocol: ExchangeProtocol,
        series: Sequence[SeriesKey],
        options: SessionOptions,
        *,
        wall_clock: bool = True,
    ) -> None:
        self.protocol = protocol
        self.options = options
        self.wall_clock = wall_clock
        self.state = State.CONNECTING
        self.stats = FeedStats()
        self.series: list[SeriesState] = []
        self.by_native: dict[str, list[SeriesState]] = {}
        for key in series:
            native = protocol.native_symbol(key.symbol)
            s = SeriesState(
                key,
                native,
                Aggregator(key, grace_s=options.grace_s, late_allowance_s=options.late_allowance_s),
                us(interval_seconds(key.interval)),
            )
            s.agg.interrupt()  # nothing is observed before the first subscription
            self.series.append(s)
        self.natives: list[str] = []
        self._one: dict[str, SeriesState] = {}
        self._by_key: dict[SeriesKey, SeriesState] = {}
        self._index()
        self._fast = protocol.fast_scan
        self._full = protocol.scan_full_hot
        self._scan_block = protocol.scan_block
        self._scan_hot = protocol.scan_hot
        self._max_frame = protocol.max_frame_bytes
        #: no aggregator can close a bar before this clock reading: a lower bound of their
        #: `next_close_us` (they only grow, except on `resume`, which resets it)
        self._close_floor_us = 0
        self._kinds = self.stats.messages
        self._grace_us = us(options.grace_s)
        self._future_us = us(options.max_future_s)
        self._acks_needed = 0
        self._up_at: float | None = None  # monotonic time of 'up' while awaiting acknowledgements
        self._await_feed_time = False
        self._feed_time_us = 0
        self._last_frame: float | None = None  # exchange clock of the last frame
        self._last_frame_mono = 0.0
        #: monotonic time of the last frame received (None: none yet), for readiness
        self.last_message_mono: float | None = None
        self._next_poll = 0.0  # REST polling while the websocket is down (monotonic)
        self._next_due_us: int | None = None  # earliest pending_until + grace of any series
        self._outstanding = 0  # backfills asked for and not reported yet
        self._then: Callable[[], list[Action]] | None = None  # the rest of a suspended frame
        self._logged: Counter[str] = Counter()
        #: subscribe messages sent and not fully answered, oldest first
        self._requests: list[_Request] = []
        #: natives the exchange refused (their series suspended), by native
        self.refusals: dict[str, Refusal] = {}
        self._told: set[str] = set()  # natives whose refusal was reported on this connection

    def _index(self) -> None:
        """The lookups derived from `series`."""
        self.by_native = {}
        for s in self.series:
            self.by_native.setdefault(s.native, []).append(s)
        self.natives = list(self.by_native)
        #: natives with exactly one series (the usual case), for the hot path
        self._one = {n: ss[0] for n, ss in self.by_native.items() if len(ss) == 1}
        self._by_key = {s.key: s for s in self.series}

    def has(self, key: SeriesKey) -> bool:
        return key in self._by_key

    def drop(self, keys: Collection[SeriesKey]) -> None:
        """Stop building and backfilling these series (handed on to another daemon); the others
        keep their state, bars in progress included. Their trades still arrive until the
        connection next subscribes (without them) and are ignored as of an unknown symbol; the
        shell abandons a backfill of theirs in flight."""
        self.series = [s for s in self.series if s.key not in keys]
        self._index()
        self._close_floor_us = 0  # a lower bound again
        self._update_due()

    # --- restore, connection events -------------------------------------------------------------
    def restore(
        self,
        key: SeriesKey,
        latest: Bar,
        open_gaps: Sequence[tuple[datetime, datetime]] = (),
        *,
        gap_end: datetime | None = None,
    ) -> None:
        """The database holds bars of `key` up to `latest`: continue after it. Built from trades,
        it was live until then: what lies between its end and the first live bar is a gap once
        live, and `latest` itself is fetched again, as a reconnect fetches the bars it cannot
        prove complete: the clock may have closed it while a trade of it was still unread, and
        the process stopped before that trade amended it (the upsert changes only what REST says
        differently). It is not part of the gap: its trades were not lost. Imported or backfilled
        (a first start after `import-bars`, a seeded history), what follows it is history, as on
        a first start.

        `open_gaps`: recorded gaps [start, end) of `key` no backfill has filled yet. Those after
        the stored bars (an earlier process stopped before storing them: a restart soon after
        another, a series handed on twice) are this session's to fill, and their bars are not
        missed again: the new gap starts after them (they also show the series was live). Those
        behind them (a backfill failed, and live bars were stored past it before a stop) are
        fetched again once subscribed, within the backfill horizon, and filled when stored.

        `gap_end`: the end of a recorded gap holding `latest`, filled or not (an unfilled one in
        `open_gaps` counts as well): REST stored the bars a restart or reconnect missed (the bar
        in progress too) and the process stopped before its first live bar, about one bar
        later. The series was live: what follows `latest` is missed, from the gap's end on, not
        history."""
        s = self._by_key.get(key)
        if s is None:
            return
        start = us_from_datetime(latest.open_time)
        end = start + s.step_us
        s.next_needed_us = start if latest.source == "live" else end
        ranges = sorted(((us_from_datetime(a), us_from_datetime(b)) for a, b in open_gaps), key=lambda g: (g[1], g[0]))
        s.gaps = [g for g in ranges if g[1] > s.next_needed_us]
        s.holes = [g for g in ranges if g[1] <= s.next_needed_us]
        ends = [b for a, b in ranges if b > s.next_needed_us or a <= start < b]  # after, or holding it
        if gap_end is not None:
            ends.append(us_from_datetime(gap_end))
        if latest.source == "live" or ends:
            s.missed_from_us = max([end, *ends])
        s.agg.set_last_close(latest.close)

    def subscribable(self, mono: float) -> list[str]:
        """The natives a new connection subscribes: all but the refused ones not due again."""
        refusals = self.refusals
        return [n for n in self.natives if n not in refusals or mono >= refusals[n].retry_at]

    def up(self, received: float, mono: float, natives: Sequence[str] | None = None) -> list[Action]:
        """The socket is open and the subscriptions of `natives` (default: `subscribable`) were
        sent, as `protocol.subscribe_requests` splits them."""
        self.state = State.SUBSCRIBING
        sent = self.subscribable(mono) if natives is None else list(natives)
        expected = self.protocol.expected_acks
        reqs = self.protocol.subscribe_requests(sent) if sent else []
        self._requests = [_Request(ns, expected(ns)) for ns, _m in reqs]
        self._acks_needed = sum(r.answers for r in self._requests)
        self._told.clear()
        self._up_at = mono
        self._last_frame = received
        self._last_frame_mono = mono
        self._await_feed_time = False
        return NO_ACTIONS

    def down(self, mono: float) -> list[Action]:
        """The connection ended. Bars are proven complete only up to the last frame (minus
        grace); any closed after that by the clock alone are suspect and fetched again from REST
        (the upsert corrects them if needed). The bar in progress is partial: dropped."""
        last = self._now_us(self._last_frame)
        for s in self.series:
            if last is not None and s.next_needed_us is not None:
                s.next_needed_us = min(s.next_needed_us, s.agg.floor(last - self._grace_us))
            if not s.agg.suspended and s.live_from_us is not None and s.next_needed_us is not None:
                # live until now: what is not proven complete is missed (what precedes the live
                # start is history, or an earlier gap of its own)
                s.missed_from_us = max(s.next_needed_us, s.live_from_us)
            s.agg.interrupt()
        self.state = State.CONNECTING
        self._next_poll = mono + self.options.rest_poll_s
        self._up_at = None
        self._await_feed_time = False
        self._requests.clear()
        for r in self.refusals.values():
            if r.retry_at == _INF:  # its retry was unanswered: the next connection asks again
                r.retry_at = mono
        return NO_ACTIONS

    def close(self) -> None:
        self.state = State.CLOSED

    # --- frames ---------------------------------------------------------------------------------
    def message(
        self,
        text: str | bytes,
        received: float,
        mono: float,
        parsed: tuple[ParseResult, list[HotRow]] | None = None,
    ) -> list[Action]:
        """One received frame: the hot path (parse once, rows straight into the aggregators).
        `parsed`: the frame's `scan_hot` answer where the caller has it (a block's row)."""
        if parsed is not None:
            res, rows = parsed
        elif type(text) is str and len(text) <= self._max_frame:  # `ExchangeProtocol.scan_hot`, inline
            try:
                res, rows = self._fast(text) or self._full(text)
            except Exception:  # whatever the schema refuses is the full parser's to judge
                res, rows = self._full(text)
        else:
            res, rows = self._full(text)
        self._last_frame = received
        self._last_frame_mono = self.last_message_mono = mono
        kind = res.kind
        self._kinds[kind] += 1
        if rows:  # only trade frames carry rows
            if len(rows) == 1 and not self._await_feed_time:
                # `_rows` inlined for the steady state: one trade of a known symbol, no backfill due
                native, tid, t, p, pf, q, _side = rows[0]
                s = self._one.get(native)
                if s is not None:
                    if self.wall_clock:
                        now = int(received * US_PER_S)  # `us_from_clock`
                        ok = t <= now + self._future_us
                        ref = t if t > now else now
                    else:
                        ok = True
                        ref = now = t if t > self._feed_time_us else self._feed_time_us
                    due = self._next_due_us
                    if ok and (due is None or ref < due):
                        if t > self._feed_time_us:
                            self._feed_time_us = t
                        self.stats.trades += 1
                        ups = s.agg.add_text(t, p, pf, q, tid)
                        if now < self._close_floor_us:  # and now <= ref < due: `_close_due` is a no-op
                            return [Publish(self._closed(s, ups))] if ups else NO_ACTIONS
                        return self._close_due(received, mono, [Publish(self._closed(s, ups))] if ups else [])
            return self._rows(rows, 0, received, mono, [])
        if (
            res is OTHER
            or res is HEARTBEAT
            or (
                (kind == "other" or kind == "heartbeat" or (kind == "ack" and not self._requests))
                and res.time_us is None
                and not res.reconnect
            )
        ):
            # the bulk of the traffic (and acknowledgements nobody waits for): nothing to decide
            # unless the clock reached a due backfill or a bar's close (`_close_due`'s tests)
            now = int(received * US_PER_S) if self.wall_clock else self._feed_time_us
            due = self._next_due_us
            if (due is None or now < due) and now < self._close_floor_us:
                return NO_ACTIONS
            return self._close_due(received, mono, [])
        out: list[Action] = []
        if kind == "malformed" or kind == "error":
            if res.refused is None or not self._refusal(res, received, mono, out):
                out.append(self._rejected(res, text))
        elif kind == "ack" and self._requests:
            self._answered(received, mono, out)
        if self._up_at is not None and self._acks_needed <= 0 and kind in ("ack", "error"):
            at = received if self.wall_clock else None
            return self._subscribed(at, mono, out, then=lambda: self._frame_time(res, received, mono, []))
        if res.reconnect:
            out.append(Reconnect(res.reason or "exchange asked"))
        if res.time_us is None:
            return self._close_due(received, mono, out)
        return self._frame_time(res, received, mono, out)

    def messages(
        self, texts: Sequence[str | bytes], received: Sequence[float], mono: float
    ) -> tuple[list[Action], int]:
        """Frames that arrived together (what the shell found queued), `received[i]` for
        `texts[i]`: the actions `message` would return for each in turn, concatenated, and how
        many frames were taken. It stops after a frame that asked for a backfill: the shell
        carries that out and passes the rest again, as it does frame by frame.

        Under load the queue holds many trade frames at once. A run of plain trade frames (one
        trade each, or several where the exchange batches them; in time order; of subscribed
        symbols) is decoded and checked once, as columns (the protocol's `scan_block`), and
        every stretch of whole frames that lands in the bars in progress with nothing due goes
        into the aggregators at once (`Aggregator.fits_block`, `add_block`). Everything else
        goes through `message`: the frame that closes a bar, a late trade, heartbeats and other
        frames between the runs (found by the protocol's `trade_marker` when the whole batch is
        not one run), a run with anything unusual.
        """
        n = len(texts)
        if n <= 1:
            return (self.message(texts[0], received[0], mono), 1) if n else (NO_ACTIONS, 0)
        out: list[Action] = []
        marker = self.protocol.trade_marker
        if marker is None:
            return out, self._run(texts, received, 0, n, self._scan_block(texts), mono, out)
        first, middle, last = texts[0], texts[n // 2], texts[-1]
        hits = (
            (type(first) is str and marker in first)  # type: ignore[operator]
            + (type(middle) is str and marker in middle)  # type: ignore[operator]
            + (type(last) is str and marker in last)  # type: ignore[operator]
        )
        tried = False
        if hits == 3:
            block = self._scan_block(texts)  # most likely all trades: one block
            if block is not None:
                return out, self._run(texts, received, 0, n, block, mono, out)
            tried = True
        elif hits < 2:  # mostly other traffic (book updates, heartbeats): frame by frame
            return out, self._frame_by_frame(texts, received, mono, out)
        # runs of frames that may be trades, and the frames between them one by one
        candidate = [type(t) is str and marker in t for t in texts]  # type: ignore[operator]
        i = 0
        while i < n:
            j = i + 1
            while j < n and candidate[j] == candidate[i]:
                j += 1
            whole = tried and i == 0 and j == n  # refused already
            block = self._scan_block(texts[i:j]) if candidate[i] and j - i > 1 and not whole else None
            end = self._run(texts, received, i, j, block, mono, out)
            if end < j or self._outstanding:  # a backfill to carry out first (its frame may end the run)
                return out, end
            i = j
        return out, n

    def _run(
        self,
        texts: Sequence[str | bytes],
        received: Sequence[float],
        start: int,
        end: int,
        block: Block | None,
        mono: float,
        out: list[Action],
    ) -> int:
        """Frames [start, end), `block` their columns (None: one by one); actions into `out`.
        Returns where it stopped: `end`, or the frame after one that asked for a backfill."""
        message = self.message
        if start or end < len(texts):
            texts, received = texts[start:end], received[start:end]
        n = end - start
        if block is None:
            return self._frame_by_frame(texts, received, mono, out) + start
        natives = block.natives
        starts = block.starts  # frames of several trades: rows and frames differ
        m = len(natives)
        if (m != n) if starts is None else (len(starts) != n + 1 or starts[-1] != m):  # as `fast_block` promises
            return self._frame_by_frame(texts, received, mono, out) + start
        single = natives.count(natives[0]) == m
        # each trade's receipt (the wall clock reads it per trade)
        rows_received = received if starts is None else [received[f] for f in self._frame_of(starts)]
        # stretches of the block may still go in at once (symbols of one series each)
        trying = set(natives) <= self._one.keys()
        i = 0  # frames from here on
        short = 0  # stretches in a row too short to take as blocks
        while i < n:
            upto = i + 1  # frames [i, upto) go through `message` (parsed already)
            if trying and not self._outstanding and not self._await_feed_time:
                first = i if starts is None else starts[i]
                j, taken = self._take(block, rows_received, first, mono, single)
                if j > 0 and starts is not None:  # trades to frames: whole frames were taken,
                    j = bisect_left(starts, j) if taken else bisect_right(starts, j - 1)  # or these need `message`
                if j < 0:  # a duplicate id or the like: the rest frame by frame
                    trying = False
                elif taken:
                    short = 0
                    if j == n:
                        break
                    i, upto = j, j + 1  # the frame that stopped the block
                else:
                    upto = j
                    short += j - i > 1
                    if short == 2:  # bars close every few trades here: frame by frame is cheaper
                        trying = False
            while i < upto:
                acts = message(texts[i], received[i], mono, (TRADES, frame_rows(block, i)))
                i += 1
                if acts:
                    out.extend(acts)
                    if self._outstanding:
                        return start + i
        return end

    @staticmethod
    def _frame_of(starts: list[int]) -> list[int]:
        """The frame of each trade of a block (`Block.starts`)."""
        return [f for f in range(len(starts) - 1) for _ in range(starts[f + 1] - starts[f])]

    def _frame_by_frame(
        self, texts: Sequence[str | bytes], received: Sequence[float], mono: float, out: list[Action]
    ) -> int:
        """Frames one by one, each parsed once. Those with nothing to decide (book updates,
        heartbeats, acknowledgements nobody waits for: the shared `OTHER`, `HEARTBEAT` and `ACK`
        answers) are only counted while the clock reaches nothing due (as `message` decides);
        the rest go through `message`. Returns where it stopped: len(texts), or the frame after
        one that asked for a backfill."""
        fixed = self.protocol.heartbeat_frames  # heartbeats sent byte for byte the same need no parse
        fast, full, max_frame = self._fast, self._full, self._max_frame
        message = self.message
        wall = self.wall_clock
        others = beats = acks = 0
        ack, limit = self._quiet_until()
        # the feed clock moves only with what `message` takes; the wall clock with each frame
        quiet = not wall and self._feed_time_us < limit
        i = 0
        for text in texts:
            if text in fixed:
                if quiet or (wall and received[i] * US_PER_S < limit):
                    beats += 1
                    i += 1
                    continue
                parsed: tuple[ParseResult, list[HotRow]] = (HEARTBEAT, NO_ROWS)
            else:
                if type(text) is str and len(text) <= max_frame:  # `ExchangeProtocol.scan_hot`, inline
                    try:
                        parsed = fast(text) or full(text)
                    except Exception:  # whatever the schema refuses is the full parser's to judge
                        parsed = full(text)
                else:
                    parsed = full(text)
                res = parsed[0]
                if (res is OTHER or res is HEARTBEAT or res is ack) and (
                    quiet or (wall and received[i] * US_PER_S < limit)
                ):
                    if res is OTHER:
                        others += 1
                    elif res is HEARTBEAT:
                        beats += 1
                    else:
                        acks += 1
                    i += 1
                    continue
            acts = message(text, received[i], mono, parsed)
            i += 1
            if acts:
                out.extend(acts)
                if self._outstanding:
                    break
            ack, limit = self._quiet_until()
            quiet = not wall and self._feed_time_us < limit
        if others or beats or acks:
            kinds = self._kinds
            kinds["other"] += others
            kinds["heartbeat"] += beats
            kinds["ack"] += acks
            self._last_frame = received[i - 1]  # `message` sets it for the frames it takes
            self._last_frame_mono = self.last_message_mono = mono
        return i

    def _quiet_until(self) -> tuple[ParseResult | None, int]:
        """What `_frame_by_frame` may count without deciding anything: the acknowledgement when none
        is awaited, and the clock reading from which a backfill is due or a bar may close."""
        due = self._next_due_us
        floor = self._close_floor_us
        return None if self._requests else ACK, floor if due is None or floor < due else due

    def _take(self, block: Block, received: Sequence[float], i: int, mono: float, single: bool) -> tuple[int, bool]:
        """Trades i, i+1, ... of a time-ordered block (`received`: each one's receipt), as far as
        they land in the bars in progress with nothing due, in whole frames: applied, and (the
        index after them, True). Else (k, False): the frames of trades i..k-1 need `message`
        (the one that stops the block, or a stretch too short to be worth it and the frame after
        it); (-1, False): none of the rest may go as a block. `single`: all of one symbol."""
        natives, ids, ts, clock, ps, keys, qs, starts = block
        us = clock.us
        one = self._one
        limit = self._close_floor_us
        if us(ts[-1]) >= limit:  # the floor may lag (a bar closed by a trade): make it exact
            limit = self._close_floor_us = min(
                (s.agg.next_close_us for s in self.series if not s.agg.suspended), default=_NEVER
            )
        due = self._next_due_us
        if due is not None and due < limit:
            limit = due
        # the clock (`now`, feed time or receipt) must stay below `limit`; trade times also
        # below the end of their bar in progress
        if not self.wall_clock and self._feed_time_us >= limit:
            return i + 1, False
        t_limit = limit
        native = natives[i]
        for nat in (native,) if single else set(natives[i:]):
            end = one[nat].agg.bar_end_us
            if end < t_limit:
                t_limit = end
        j = bisect_left(ts, clock.key(t_limit), i)  # the first trade at or after `t_limit`
        if j - i < MIN_BLOCK:  # a stretch this short is cheaper one by one, with the frame after it
            return min(j + 1, len(ts)), False
        if self.wall_clock:  # receipt times: `us_from_clock`, per frame
            if int(max(received[i:j]) * US_PER_S) >= limit:  # the clock reaches a close: stop there
                j = next(k for k in range(i, j) if int(received[k] * US_PER_S) >= limit)
            future = self._future_us
            if j > i and us(ts[j - 1]) > int(min(received[i:j]) * US_PER_S) + future:  # not proven by the bounds:
                # a trade from the future, by its frame's clock: `message` counts it
                j = next((k for k in range(i, j) if us(ts[k]) > int(received[k] * US_PER_S) + future), j)
        if starts is not None:  # whole frames only: the one a stretch ends in goes through `message`
            j = starts[bisect_right(starts, j) - 1]
        if j == i:
            return i + 1, False
        tmin, tmax = us(ts[i]), us(ts[j - 1])
        if single:
            agg = one[native].agg
            idset = agg.fits_block(tmin, tmax, None if ids is None else ids[i:j])
            if idset is None:
                if tmin < agg.bar_start_us or ids is None:
                    return i + 1, False  # a late trade: `message` takes it
                j = i + agg.first_duplicate(ids[i:j])  # the stretch before a duplicate id
                if starts is not None:
                    j = starts[bisect_right(starts, j) - 1]
                if j == i:
                    return i + 1, False
                tmax = us(ts[j - 1])
                idset = agg.fits_block(tmin, tmax, ids[i:j])
                if idset is None:
                    return -1, False
            agg.add_block(tmin, tmax, ps[i:j], keys[i:j], qs[i:j], idset)
        else:
            groups: dict[str, list[int]] = {}
            for k in range(i, j):
                groups.setdefault(natives[k], []).append(k)
            parts = []
            for nat, idx in groups.items():
                agg = one[nat].agg
                first, last = us(ts[idx[0]]), us(ts[idx[-1]])
                idset = agg.fits_block(first, last, None if ids is None else [ids[k] for k in idx])
                if idset is None:
                    return (-1, False) if first >= agg.bar_start_us else (i + 1, False)
                g_ps, g_keys, g_qs = [ps[k] for k in idx], [keys[k] for k in idx], [qs[k] for k in idx]
                parts.append((agg, first, last, g_ps, g_keys, g_qs, idset))
            for agg, first, last, g_ps, g_keys, g_qs, idset in parts:
                agg.add_block(first, last, g_ps, g_keys, g_qs, idset)
        if tmax > self._feed_time_us:
            self._feed_time_us = tmax
        self._kinds["trade"] += j - i if starts is None else bisect_left(starts, j) - bisect_left(starts, i)
        self.stats.trades += j - i
        self.stats.block_trades += j - i
        self._last_frame = received[j - 1]
        self._last_frame_mono = self.last_message_mono = mono
        return j, True

    def _frame_time(self, res: ParseResult, received: float, mono: float, out: list[Action]) -> list[Action]:
        t = res.time_us
        if t is not None:
            if t > self._feed_time_us:
                self._feed_time_us = t
            if self._await_feed_time:
                return self._resume_all(t, mono, out, then=lambda: self._close_due(received, mono, []))
        return self._close_due(received, mono, out)

    def _rows(self, rows: list[HotRow], i: int, received: float, mono: float, out: list[Action]) -> list[Action]:
        """Trades of a frame from index `i` on; may suspend for a backfill (see module doc)."""
        st = self.stats
        by_native = self.by_native
        wall = self.wall_clock
        now = us_from_clock(received) if wall else 0
        limit = now + self._future_us if wall else _NEVER
        one = self._one
        n = len(rows)
        while i < n:
            native, tid, t, p, pf, q, _side = rows[i]
            s = one.get(native)
            if s is not None and t <= limit and not self._await_feed_time:
                # the steady state: the one series of this symbol, no backfill due before it
                if t > self._feed_time_us:
                    self._feed_time_us = t
                due = self._next_due_us
                if due is None or ((t if t > now else now) if wall else self._feed_time_us) < due:
                    st.trades += 1
                    i += 1
                    ups = s.agg.add_text(t, p, pf, q, tid)
                    if ups:
                        out.append(Publish(self._closed(s, ups)))
                    continue
            targets = by_native.get(native)
            if targets is None or t > limit:
                st.trades += 1
                if targets is None:
                    st.unknown_symbol += 1
                else:
                    st.future_trades += 1
                i += 1
                continue
            if t > self._feed_time_us:
                self._feed_time_us = t
            if self._await_feed_time:
                return self._resume_all(t, mono, out, then=self._resume_rows(rows, i, received, mono))
            due = self._next_due_us
            if due is not None:
                ref = (t if t > now else now) if wall else self._feed_time_us
                if ref >= due:
                    before = self._outstanding
                    self._due_backfills(ref, mono, out)
                    if self._outstanding > before:  # this trade and the rest wait for the backfill
                        self._then = self._resume_rows(rows, i, received, mono)
                        return out
            st.trades += 1
            i += 1
            for s in targets:
                ups = s.agg.add_text(t, p, pf, q, tid)
                if ups:
                    out.append(Publish(self._closed(s, ups)))
        now = now if wall else self._feed_time_us
        due = self._next_due_us
        if (due is None or now < due) and now < self._close_floor_us:
            return out  # `_close_due`'s usual answer, without the call
        return self._close_due(received, mono, out)

    def _resume_rows(self, rows: list[HotRow], i: int, received: float, mono: float) -> Callable[[], list[Action]]:
        return lambda: self._rows(rows, i, received, mono, [])

    def _close_due(self, received: float, mono: float, out: list[Action]) -> list[Action]:
        now = us_from_clock(received) if self.wall_clock else self._feed_time_us
        if not now:
            return out
        due = self._next_due_us
        if due is not None and now >= due:
            before = self._outstanding
            self._due_backfills(now, mono, out)
            if self._outstanding > before:
                self._then = lambda: self._advance(now, [])
                return out
        if now < self._close_floor_us:  # most frames close nothing
            return out
        floor = _NEVER
        for s in self.series:  # inlined `_advance`, and the next time anything can close
            agg = s.agg
            if not agg.suspended:
                if now >= agg.next_close_us:
                    ups = agg.advance(now)
                    if ups:
                        out.append(Publish(self._closed(s, ups)))
                if agg.next_close_us < floor:
                    floor = agg.next_close_us
        self._close_floor_us = floor
        return out

    def _advance(self, now: int, out: list[Action]) -> list[Action]:
        for s in self.series:
            if not s.agg.suspended:
                ups = s.agg.advance(now)
                if ups:
                    out.append(Publish(self._closed(s, ups)))
        return out

    # --- clock ----------------------------------------------------------------------------------
    def tick(self, now: float | None, mono: float) -> list[Action]:
        """Time passes: acknowledgement timeout, stale stream, REST while down, bar closing."""
        out: list[Action] = []
        if self.state is State.CLOSED:
            return out
        if self.state is State.CONNECTING:
            self._rest_while_down(now, mono, out)
            if self._outstanding:
                return out
        if self.refusals and self._up_at is None and self.state in (State.LIVE, State.BACKFILLING):
            self._retry_refused(mono, out)
        if self._up_at is not None and mono - self._up_at > self.options.ack_timeout_s and not self._await_feed_time:
            at = now if self.wall_clock else None
            return self._subscribed(at, mono, out, then=lambda: self._tick_bars(now, mono, []))
        if (
            self.state in (State.LIVE, State.BACKFILLING, State.SUBSCRIBING)
            and mono - self._last_frame_mono > self.options.stall_timeout_s
        ):
            self.state = State.STALE
            self.stats.stale += 1
            out.append(Reconnect(f"stale: no frame for {self.options.stall_timeout_s:g}s"))
        return self._tick_bars(now, mono, out)

    def _tick_bars(self, now: float | None, mono: float, out: list[Action]) -> list[Action]:
        now_us = self._now_us(now)
        if now_us is None:
            return out
        before = self._outstanding
        self._due_backfills(now_us, mono, out)
        if self._outstanding > before:
            self._then = lambda: self._advance(now_us, [])
            return out
        return self._advance(now_us, out)

    def _rest_while_down(self, now: float | None, mono: float, out: list[Action]) -> None:
        if mono < self._next_poll or self._outstanding:
            return
        self._next_poll = mono + self.options.rest_poll_s
        if self.wall_clock:
            if now is None:
                return
            now_us = us_from_clock(now)
            for i, s in enumerate(self.series):
                if s.native in self.refusals:
                    continue
                self._ensure_start(s, now_us)
                self._ask(i, s, s.agg.floor(now_us - self._grace_us), out)
            return
        # feed clock: no "now" to bound the range; the exchange's REST serves closed candles only
        for i, s in enumerate(self.series):
            if s.native in self.refusals:
                continue
            if s.next_needed_us is None:
                if not self._feed_time_us:
                    continue
                self._ensure_start(s, self._feed_time_us)
            assert s.next_needed_us is not None
            end = s.next_needed_us + self.options.max_candles * s.step_us
            self._outstanding += 1
            out.append(Backfill(i, s.key, s.native, s.next_needed_us, end, open_ended=True))

    # --- subscription and backfill --------------------------------------------------------------
    def _subscribed(
        self, at: float | None, mono: float, out: list[Action], then: Callable[[], list[Action]]
    ) -> list[Action]:
        self._up_at = None
        self.stats.subscriptions += 1
        self.state = State.LIVE
        if at is None:  # feed clock: live from the first time the feed tells us
            self._await_feed_time = True
            out.extend(then())
            return out
        return self._resume_all(us_from_clock(at), mono, out, then=then)

    def _resume_all(
        self, observed_us: int, mono: float, out: list[Action], then: Callable[[], list[Action]]
    ) -> list[Action]:
        self._await_feed_time = False
        before = self._outstanding
        self._close_floor_us = 0  # resumed aggregators close from their new cursor on
        for i, s in enumerate(self.series):
            if s.native not in self.refusals:  # a refused symbol's series stay suspended
                self._resume_series(i, s, observed_us, out)
        self._update_due()
        if self._outstanding > before:
            self._then = then
            return out
        out.extend(then())
        return out

    def _resume_series(self, i: int, s: SeriesState, observed_us: int, out: list[Action]) -> None:
        s.agg.resume(observed_us)
        live_from = s.agg.cursor_us
        assert live_from is not None
        self._ensure_start(s, observed_us)
        if s.missed_from_us is not None:
            self._gap(s, live_from, out)
        s.live_from_us = live_from
        s.pending_until_us = live_from
        s.retry_at = 0.0
        # what has closed already can be fetched now; the partial interval once it is over
        self._ask(i, s, s.agg.floor(observed_us - self._grace_us), out)
        if s.holes:
            self._ask_holes(i, s, observed_us, out)

    # --- refusals ---------------------------------------------------------------------------------
    def _send(self, natives: Sequence[str], out: list[Action], *, retry: bool, one_each: bool = False) -> int:
        """Ask for `natives` on the open connection (`one_each`: a request per symbol, so each
        answer is one symbol's); returns the answers that will come."""
        sub = self.protocol.subscribe_requests
        reqs = [r for n in natives for r in sub([n])] if one_each else sub(natives)
        expected = self.protocol.expected_acks
        new = [_Request(ns, expected(ns), retry) for ns, _m in reqs]
        self._requests.extend(new)
        out.append(Subscribe([m for _ns, m in reqs]))
        return sum(r.answers for r in new)

    def _answered(self, received: float, mono: float, out: list[Action]) -> None:
        """An acknowledgement: the oldest request's; once all its answers came, its natives not
        refused are subscribed (a retry's resume at once; at connect, when all are in)."""
        r = self._requests[0]
        r.answers -= 1
        if self._up_at is not None and not r.retry:
            self._acks_needed -= 1
        if r.answers > 0:
            return
        self._requests.pop(0)
        for n in r.natives:
            if n not in r.refused and self.refusals.pop(n, None) is not None:
                self._listed(n, received, out)

    def _listed(self, native: str, received: float, out: list[Action]) -> None:
        """A refused symbol is acknowledged: its series resume (at connect, with all the others)."""
        series = [(i, s) for i, s in enumerate(self.series) if s.native == native]
        out.append(SubscriptionAccepted(tuple(s.key for _i, s in series), native))
        observed = us_from_clock(received) if self.wall_clock else self._feed_time_us
        if self._up_at is not None or not observed:
            return
        self._close_floor_us = 0  # resumed aggregators close from their new cursor on
        for i, s in series:
            self._resume_series(i, s, observed, out)
        self._update_due()

    def _refusal(self, res: ParseResult, received: float, mono: float, out: list[Action]) -> bool:
        """An answer refusing a subscription: which request and symbols it is (module doc).
        False: it answers nothing of ours (an error like any other)."""
        named = tuple(n for n in res.refused or () if n in self.by_native)
        if named:
            req = next((r for r in self._requests if set(named) & set(r.natives)), None)
        else:
            req = self._requests[0] if self._requests else None
            if req is None:
                return False
        reason = (res.reason or "refused").removeprefix("subscription_refused:")
        if req is None:  # names a symbol of ours outside any request: refused all the same
            for n in named:
                self._refuse(n, reason, mono, out)
            return True
        connecting = self._up_at is not None and not req.retry
        req.answers -= 1
        if connecting:
            self._acks_needed -= 1
        natives = named or req.natives
        if not named and len(req.natives) > 1:
            # which symbol it refuses, nobody can tell: ask for each on its own
            self._requests.remove(req)
            if connecting:
                self._acks_needed -= max(req.answers, 0)
            added = self._send(req.natives, out, retry=req.retry, one_each=True)
            if connecting:
                self._acks_needed += added
            return True
        req.refused.update(natives)
        if req.answers <= 0 or self.protocol.refusal_drops_request:
            self._requests.remove(req)
            if connecting:
                self._acks_needed -= max(req.answers, 0)
            rest = [n for n in req.natives if n not in req.refused]
            if rest and self.protocol.refusal_drops_request:  # the exchange ignored the others too
                added = self._send(rest, out, retry=req.retry)
                if connecting:
                    self._acks_needed += added
        for n in natives:
            self._refuse(n, reason, mono, out)
        return True

    def _refuse(self, native: str, reason: str, mono: float, out: list[Action]) -> None:
        """`native` is refused: its series suspend (as at a disconnect) until it is asked again."""
        self.stats.refusals += 1
        before = self.refusals.get(native)
        count = before.count + 1 if before else 1
        opts = self.options
        delay = min(opts.refused_retry_max_s, opts.refused_retry_s * 2 ** min(count - 1, 30))
        self.refusals[native] = Refusal(reason, count, mono + delay, delay)
        keys = []
        for s in self.by_native[native]:
            keys.append(s.key)
            if not s.agg.suspended:
                if s.live_from_us is not None and s.next_needed_us is not None:
                    s.missed_from_us = max(s.next_needed_us, s.live_from_us)
                s.agg.interrupt()
            s.pending_until_us = None
        self._update_due()
        out.append(SubscriptionRefused(tuple(keys), native, reason, delay, native not in self._told))
        self._told.add(native)

    def _retry_refused(self, mono: float, out: list[Action]) -> None:
        due = [n for n, r in self.refusals.items() if mono >= r.retry_at]
        for n in due:
            self.refusals[n].retry_at = _INF  # until answered (or the connection ends)
        if due:
            self._send(due, out, retry=True, one_each=True)

    def refused_reason(self, key: SeriesKey) -> str | None:
        """Why the exchange refuses `key`'s symbol (None: it does not)."""
        for s in self.series:
            if s.key == key:
                r = self.refusals.get(s.native)
                return None if r is None else r.reason
        return None

    def _gap(self, s: SeriesState, live_from: int, out: list[Action]) -> None:
        """A series live before (in this process or, restored, in the last) resumes at
        `live_from`: the bars missed since it went down are a gap."""
        start, s.missed_from_us = s.missed_from_us, None
        if start is None or start >= live_from:
            return
        out.append(GapDetected(s.key, start, live_from))
        assert s.next_needed_us is not None
        if s.next_needed_us >= live_from:  # REST polling while down stored all of it already
            out.append(GapFilled(s.key, start, live_from))
        else:
            s.gaps.append((start, live_from))

    def _gaps_filled(self, s: SeriesState, req: Backfill, out: list[Action]) -> None:
        """Gaps that `req` (overlapping them) has brought `next_needed` past are filled; older
        ones it cannot reach (a failed backfill skipped by live bars) are forgotten, unfilled."""
        done = s.next_needed_us or 0
        while s.gaps and s.gaps[0][1] <= done:
            start, end = s.gaps.pop(0)
            if req.start_us < end:
                out.append(GapFilled(s.key, start, end))

    def _horizon(self, s: SeriesState, now_us: int) -> int:
        """The oldest bar a backfill fetches: `backfill_days`, at least a forecaster's window."""
        return s.agg.floor(now_us - max(us(self.options.backfill_days * 86_400), MIN_HISTORY_BARS * s.step_us))

    def _ensure_start(self, s: SeriesState, now_us: int) -> None:
        if s.next_needed_us is None:
            s.next_needed_us = self._horizon(s, now_us)

    def _ask_holes(self, i: int, s: SeriesState, now_us: int, out: list[Action]) -> None:
        """Recorded gaps behind the stored bars, fetched again (after the bars still needed) as
        far as the backfill horizon reaches; older ones stay unfilled, as history not fetched."""
        horizon = self._horizon(s, now_us)
        for a, b in s.holes:
            if b > horizon:
                self._outstanding += 1
                out.append(Backfill(i, s.key, s.native, max(a, horizon), b, hole=(a, b)))
        s.holes = []

    def _due_backfills(self, now_us: int, mono: float, out: list[Action]) -> None:
        due = self._next_due_us
        if due is None or now_us < due:
            return
        for i, s in enumerate(self.series):
            p = s.pending_until_us
            if p is not None and now_us >= p + self._grace_us and mono >= s.retry_at:
                self._ask(i, s, p, out, final=True)
        self._update_due()

    def _update_due(self) -> None:
        dues = [s.pending_until_us + self._grace_us for s in self.series if s.pending_until_us is not None]
        self._next_due_us = min(dues) if dues else None
        if self.state in (State.LIVE, State.BACKFILLING):
            self.state = State.BACKFILLING if dues or self._outstanding else State.LIVE

    def _ask(self, i: int, s: SeriesState, until_us: int, out: list[Action], *, final: bool = False) -> None:
        start = s.next_needed_us
        if start is None or until_us <= start:
            if final:
                s.pending_until_us = None
            return
        self._outstanding += 1
        out.append(Backfill(i, s.key, s.native, start, until_us, final=final))

    def backfilled(self, req: Backfill, page_end_us: int, bars: list[Bar], *, last: bool) -> list[Action]:
        """One page of `req` was fetched (and is about to be stored, in order): `bars` cover up
        to `page_end_us`. `last`: the request is complete."""
        out: list[Action] = []
        s = self._by_key.get(req.series)
        if s is None:  # handed on meanwhile (the shell abandons such a request)
            if last:
                self._finish_request(out)
            return out
        self.stats.backfilled_bars += len(bars)
        if req.hole is not None:  # behind the stored bars: what is known of the series stays
            if bars:
                out.append(Publish([BarUpdate(b, "backfilled", datetime_from_us(req.end_us)) for b in bars]))
            if last:
                out.append(GapFilled(s.key, *req.hole))
                self._finish_request(out)
            return out
        if req.open_ended:
            if bars:
                end = us_from_datetime(bars[-1].open_time) + s.step_us
                s.next_needed_us = max(s.next_needed_us or 0, end)
        else:
            s.next_needed_us = max(s.next_needed_us or 0, page_end_us)
        if bars:
            closed = s.agg.closed_until_us
            if closed is None or us_from_datetime(bars[-1].open_time) + s.step_us >= closed:
                # not when live bars closed after these (a retried hole): flat bars continue from theirs
                s.agg.set_last_close(bars[-1].close)
            until = None if req.open_ended else datetime_from_us(req.end_us)
            out.append(Publish([BarUpdate(b, "backfilled", until) for b in bars]))
        if s.gaps:
            self._gaps_filled(s, req, out)
        if last:
            if req.final:
                s.pending_until_us = None
                # live bars that closed while this range was outstanding are stored already
                closed = s.agg.closed_until_us
                if closed is not None and s.next_needed_us is not None and closed > s.next_needed_us:
                    s.next_needed_us = closed
                self._update_due()
            self._finish_request(out)
        return out

    def backfill_failed(self, req: Backfill, mono: float, refused: str | None = None) -> list[Action]:
        """A page of `req` failed (or the shell abandoned it: its series was handed on): what
        was stored stays; the rest is retried later (a hole at the next subscription).
        `refused`: the exchange said the symbol is not listed (its reason): the symbol is refused."""
        out: list[Action] = []
        s = self._by_key.get(req.series)
        if s is not None:
            self.stats.backfill_failures += 1
            if req.hole is not None:
                s.holes.append(req.hole)
            else:
                s.retry_at = mono + self.options.backfill_retry_s
            if refused is not None:
                self._refuse(s.native, refused, mono, out)
        self._finish_request(out)
        return out

    def _finish_request(self, out: list[Action]) -> None:
        self._outstanding -= 1
        self._update_due()
        if self._outstanding == 0 and self._then is not None:
            then, self._then = self._then, None
            out.extend(then())

    # --- helpers --------------------------------------------------------------------------------
    def _now_us(self, stamp: float | None) -> int | None:
        if not self.wall_clock:
            return self._feed_time_us or None
        return None if stamp is None else us_from_clock(stamp)

    def _closed(self, s: SeriesState, ups: list[BarUpdate]) -> list[BarUpdate]:
        # one call's updates are all closed bars (in order) or all amendments
        if ups[0].kind == "closed":
            end = s.agg.closed_until_us
            behind = s.pending_until_us is not None and (s.next_needed_us or 0) < s.pending_until_us
            # a REST range before the live bars still to fetch (a failed backfill awaiting its
            # retry) keeps `next_needed` at its start: moving past it would skip it for good
            if end is not None and not behind and (s.next_needed_us is None or end > s.next_needed_us):
                s.next_needed_us = end
        return ups

    def _rejected(self, res: ParseResult, text: str | bytes) -> Rejected:
        reason = res.reason or res.kind
        if res.kind == "malformed":
            self.stats.malformed[reason] += 1
        self._logged[reason] += 1
        return Rejected(res.kind, reason, self._logged[reason], text)

    @staticmethod
    def should_log(r: Rejected) -> bool:
        return r.count <= LOG_FIRST or r.count % 1000 == 0

    def last_close(self, key: SeriesKey) -> Decimal | None:
        return next((s.agg.last_close for s in self.series if s.key == key), None)
