"""The sans-I/O FeedSession, table-driven: frames and ticks in, actions out. No sockets, no DB."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import TypeVar

import pytest

from daemon.feeds import PROTOCOLS
from daemon.feeds.fields import US_PER_S, iso_us
from daemon.feeds.session import (
    MIN_HISTORY_BARS,
    Action,
    Backfill,
    FeedSession,
    GapDetected,
    GapFilled,
    Publish,
    Reconnect,
    Rejected,
    SessionOptions,
    State,
    Subscribe,
    SubscriptionAccepted,
    SubscriptionRefused,
)
from db.records import Bar, BarSource, SeriesKey, interval_seconds, to_unix, utc_from_unix

T = TypeVar("T")
KEY = SeriesKey("coinbase", "BTC-USD", "5m")
T0 = 1_609_459_200  # 2021-01-01T00:00:00Z, aligned
OPTS = SessionOptions(grace_s=2.0, backfill_days=0.0, stall_timeout_s=5.0, backfill_retry_s=30.0, rest_poll_s=10.0)


def match(t: float, price: str, tid: int) -> str:
    return (
        f'{{"type":"match","trade_id":{tid},"side":"sell","size":"1","price":"{price}",'
        f'"product_id":"BTC-USD","time":"{iso_us(int(t * US_PER_S))}"}}'
    )


ACK = '{"type":"subscriptions","channels":[]}'


def of(actions: list[Action], cls: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, cls)]


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def spans(actions: list[Action]) -> list[tuple[str, int, int]]:
    """(kind, start_us, end_us) of each action; every one must be a range (a backfill or a gap)."""
    ranges = [a for a in actions if isinstance(a, Backfill | GapDetected | GapFilled)]
    assert len(ranges) == len(actions), kinds(actions)
    return [(type(a).__name__, a.start_us, a.end_us) for a in ranges]


def state(s: FeedSession) -> State:
    """`s.state`, read afresh: mypy keeps an asserted `s.state` narrowed across the calls that
    change it, and then skips the rest of the test as unreachable."""
    return s.state


def live_session(at: float = T0 + 10) -> FeedSession:
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS)
    s.up(at, 0.0)
    return s


def test_states_from_connect_to_live_to_down() -> None:
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS)
    assert state(s) is State.CONNECTING
    s.up(T0 + 10, 0.0)
    assert state(s) is State.SUBSCRIBING
    acts = s.message(ACK, T0 + 10, 0.1)
    # subscribed at T0+10: live from T0+300; [next_needed, T0) is asked for now (history), the
    # partial interval is pending until it is over
    assert state(s) is State.BACKFILLING and kinds(acts) == ["Backfill"]
    (history,) = of(acts, Backfill)
    s.backfilled(history, history.end_us, [], last=True)
    s.down(1.0)
    assert state(s) is State.CONNECTING
    s.close()
    assert state(s) is State.CLOSED and s.tick(T0, 2.0) == []


@pytest.mark.parametrize(
    ("frame", "expect"),
    [
        ("not json", ["Rejected"]),
        ('{"type":"match","price":"1e999999"}', ["Rejected"]),
        ('{"type":"error","message":"bad"}', ["Rejected"]),
        ('{"type":"l2update"}', []),
        ('{"type":"heartbeat"}', []),
    ],
)
def test_frames_to_actions(frame: str, expect: list[str]) -> None:
    s = live_session()
    s.message(ACK, T0 + 10, 0.1)
    assert kinds(s.message(frame, T0 + 11, 0.2)) == expect
    if expect:
        assert isinstance(s.message(frame, T0 + 11, 0.2)[0], Rejected)


def test_trade_frames_close_bars_and_a_due_backfill_comes_first() -> None:
    s = live_session()
    (history,) = s.message(ACK, T0 + 10, 0.1)  # live from T0+300; [T0, T0+300) pending until T0+302
    assert isinstance(history, Backfill) and history.end_us == T0 * US_PER_S
    assert s.backfilled(history, history.end_us, [], last=True) == []
    assert s.message(match(T0 + 301, "10", 1), T0 + 301, 0.2) == []  # not due yet (grace)
    acts = s.message(match(T0 + 610, "11", 2), T0 + 610, 0.3)
    # the partial first interval is due: the frame waits for it before its trade closes bar T0+300
    assert kinds(acts) == ["Backfill"]
    (final,) = of(acts, Backfill)
    assert final.final and final.start_us == T0 * US_PER_S
    bar = Bar("coinbase", "BTC-USD", "5m", utc_from_unix(T0), *(Decimal(9),) * 4, Decimal(1), 1, "backfill")
    after = s.backfilled(final, final.end_us, [bar], last=True)
    assert kinds(after) == ["Publish", "Publish"]
    backfilled, live = of(after, Publish)
    assert backfilled.updates[0].kind == "backfilled"
    closed = live.updates[0]
    assert closed.kind == "closed" and closed.bar.open == Decimal(10) and state(s) is State.LIVE


def test_stale_stream_asks_for_a_reconnect_once() -> None:
    s = live_session()
    s.message(ACK, T0 + 10, 0.1)
    assert not [a for a in s.tick(T0 + 12, 3.0) if isinstance(a, Reconnect)]
    acts = s.tick(T0 + 20, 6.0)
    assert [a for a in acts if isinstance(a, Reconnect)] and state(s) is State.STALE
    assert not [a for a in s.tick(T0 + 21, 7.0) if isinstance(a, Reconnect)]


def test_ack_timeout_treats_the_stream_as_live() -> None:
    s = live_session()
    assert s.tick(T0 + 11, 5.0) == [] or state(s) is State.SUBSCRIBING
    acts = s.tick(T0 + 21, 10.5)
    assert state(s) in (State.LIVE, State.BACKFILLING) and all(isinstance(a, Backfill) for a in acts)


def test_failed_backfill_is_retried_after_the_retry_delay() -> None:
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS)
    (req,) = s.tick(T0 + 4000, 0.0)  # down at start: REST polling asks for what has closed
    assert isinstance(req, Backfill) and s.tick(T0 + 4000, 1.0) == []  # one request at a time
    s.backfill_failed(req, 1.0)
    assert s.stats.backfill_failures == 1
    assert s.tick(T0 + 4000, 5.0) == []  # not before the poll interval
    (again,) = s.tick(T0 + 4000, 10.5)
    assert isinstance(again, Backfill) and again.start_us == req.start_us  # nothing was stored: same range


def test_feed_clock_polls_open_ended_ranges_while_down() -> None:
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS, wall_clock=False)
    s.up(0.0, 0.0)
    s.message(ACK, 0.0, 0.1)
    acts = s.message(match(T0 + 10, "10", 1), 0.0, 0.2)  # live from the first feed time: history first
    while acts:
        b = next(a for a in acts if isinstance(a, Backfill))
        acts = [a for a in s.backfilled(b, b.end_us, [], last=True) if isinstance(a, Backfill)]
    s.down(1.0)
    acts = s.tick(None, 11.5)
    req = next(a for a in acts if isinstance(a, Backfill))
    assert req.open_ended and req.end_us - req.start_us == OPTS.max_candles * 300 * US_PER_S
    last = Bar("coinbase", "BTC-USD", "5m", utc_from_unix(T0 + 300), *(Decimal(9),) * 4, Decimal(1), 1, "backfill")
    pub = s.backfilled(req, req.end_us, [last], last=True)
    assert isinstance(pub[0], Publish)
    assert s.series[0].next_needed_us == (T0 + 600) * US_PER_S  # after the last candle, not the window


# --- gaps: what a reconnect cost the live stream ---------------------------------------------------

BEAT = '{"type":"heartbeat"}'
NO_GRACE = SessionOptions(grace_s=0.0, backfill_days=0.0, stall_timeout_s=5.0, rest_poll_s=10.0)
#: live from T0+300, bar T0+300 closed by a trade at T0+610 (next needed: T0+600), last frame T0+700
LIVE = [("up", 10), ("ack", 10), ("trade", 301), ("trade", 610), ("beat", 700)]


def gaps_of(steps: list[tuple], opts: SessionOptions = OPTS) -> list[tuple[str, int, int]]:
    """Run `steps` through a session, every backfill answered at once (no candles), and return the
    gap actions in order as (kind, start, end) in seconds after T0."""
    return [(kind, start, end) for _key, kind, start, end, _n in run_gaps(steps, opts)]


def candle(key: SeriesKey, t: int) -> Bar:
    return Bar(key.exchange, key.symbol, key.interval, utc_from_unix(t), *(Decimal(9),) * 4, Decimal(1), 1, "backfill")


def run_gaps(
    steps: list[tuple],
    opts: SessionOptions = OPTS,
    *,
    keys: tuple[SeriesKey, ...] = (KEY,),
    stored: dict[SeriesKey, int] | None = None,
    source: BarSource = "live",
    candles: bool = False,
    open_gaps: tuple[tuple[int, int], ...] = (),
    gap_end: int | None = None,
) -> list[tuple[SeriesKey, str, int, int, int]]:
    """Run `steps` through a session whose database holds, per series of `stored`, bars up to the
    one opening that many seconds after T0 (a restart; the newest from `source`) and, for KEY,
    the recorded gaps `open_gaps` not filled yet (and a recorded gap ending at `gap_end` holding
    its newest bar), every backfill answered at once (with a candle per bar if `candles`, else
    none). Returns the gap actions in order as (series, kind, start, end, backfilled bars
    published in [start, end) so far), times in seconds after T0."""
    s = FeedSession(PROTOCOLS["coinbase"], list(keys), opts)
    for key, latest in (stored or {}).items():
        recorded = [(utc_from_unix(T0 + a), utc_from_unix(T0 + b)) for a, b in open_gaps] if key == KEY else []
        held = utc_from_unix(T0 + gap_end) if gap_end is not None and key == KEY else None
        s.restore(key, replace(candle(key, T0 + latest), source=source), recorded, gap_end=held)
    published: list[tuple[SeriesKey, int]] = []
    seen: list[tuple[SeriesKey, str, int, int, int]] = []
    mono = 0.0
    tid = 0
    for step in steps:
        mono += 0.1
        what = step[0]
        if what == "down":
            acts = s.down(mono)
        else:
            t = T0 + step[1]  # every step but "down" has its time
            if what == "up":
                acts = s.up(t, mono)
            elif what == "ack":
                acts = s.message(ACK, t, mono)
            elif what == "trade":
                tid += 1
                acts = s.message(match(t, "10", tid), t, mono)
            elif what == "beat":
                acts = s.message(BEAT, t, mono)
            elif what == "poll":  # REST polling while down, once its interval has passed
                mono += opts.rest_poll_s + 1
                acts = s.tick(t, mono)
            else:
                assert what == "tick"
                acts = s.tick(t, mono)
        todo = list(acts)
        while todo:
            a = todo.pop(0)
            if isinstance(a, GapDetected | GapFilled):
                start, end = a.start_us // US_PER_S - T0, a.end_us // US_PER_S - T0
                n = sum(k == a.series and start <= b < end for k, b in published)
                seen.append((a.series, type(a).__name__, start, end, n))
            elif isinstance(a, Backfill):
                step_s = interval_seconds(a.series.interval)
                bars = [candle(a.series, b) for b in range(a.start_us // US_PER_S, a.end_us // US_PER_S, step_s)]
                todo[:0] = s.backfilled(a, a.end_us, bars if candles else [], last=True)
            elif isinstance(a, Publish):
                published += [(u.bar.series, to_unix(u.bar.open_time) - T0) for u in a.updates
                              if u.kind == "backfilled"]
    return seen


@pytest.mark.parametrize(
    ("steps", "opts", "expect"),
    [
        pytest.param([*LIVE, ("tick", 1000)], OPTS, [], id="first-start-history-is-no-gap"),
        pytest.param([("up", 10), ("down",), ("up", 500), ("ack", 500), ("tick", 602)], OPTS, [],
                     id="down-before-ever-live-is-no-gap"),
        pytest.param([*LIVE, ("down",), ("up", 1000), ("ack", 1000)], OPTS, [("GapDetected", 600, 1200)],
                     id="resume-detects-missed-range"),
        pytest.param([*LIVE, ("down",), ("up", 1000), ("ack", 1000), ("tick", 1202)], OPTS,
                     [("GapDetected", 600, 1200), ("GapFilled", 600, 1200)], id="filled-once-backfill-covers-it"),
        pytest.param([*LIVE[:4], ("beat", 650), ("down",), ("up", 651), ("ack", 651), ("tick", 902)], OPTS,
                     [("GapDetected", 600, 900), ("GapFilled", 600, 900)], id="blip-loses-the-bar-in-progress"),
        pytest.param([*LIVE, ("down",), ("up", 800), ("down",), ("up", 1000), ("ack", 1000), ("tick", 1202)], OPTS,
                     [("GapDetected", 600, 1200), ("GapFilled", 600, 1200)],
                     id="two-drops-before-resubscribing-one-gap"),
        pytest.param([*LIVE, ("down",), ("up", 1000), ("ack", 1000), ("tick", 1202), ("trade", 1210),
                      ("trade", 1510), ("beat", 1600), ("down",), ("up", 1700), ("ack", 1700), ("tick", 1802)], OPTS,
                     [("GapDetected", 600, 1200), ("GapFilled", 600, 1200),
                      ("GapDetected", 1500, 1800), ("GapFilled", 1500, 1800)], id="each-outage-its-own-gap"),
        pytest.param([("up", 10), ("ack", 10), ("trade", 301), ("beat", 600), ("down",), ("up", 600), ("ack", 600),
                      ("tick", 700)], NO_GRACE, [], id="resume-with-nothing-missed"),
        pytest.param([("up", 10), ("ack", 10), ("trade", 301), ("beat", 600), ("beat", 700), ("down",),
                      ("poll", 1200), ("up", 1200), ("ack", 1200)], NO_GRACE,
                     [("GapDetected", 600, 1200), ("GapFilled", 600, 1200)], id="rest-polling-filled-it-while-down"),
    ],
)
def test_a_reconnect_reports_the_bars_it_missed(steps: list[tuple], opts: SessionOptions, expect: list) -> None:
    assert gaps_of(steps, opts) == expect


def test_a_failed_backfill_leaves_the_gap_open_until_a_retry_fills_it() -> None:
    s = live_session()
    (history,) = s.message(ACK, T0 + 10, 0.1)
    assert isinstance(history, Backfill)
    s.backfilled(history, history.end_us, [], last=True)
    s.message(match(T0 + 301, "10", 1), T0 + 301, 0.2)  # the partial first interval is due: fetched
    final = next(a for a in s.message(match(T0 + 610, "11", 2), T0 + 610, 0.3) if isinstance(a, Backfill))
    s.backfilled(final, final.end_us, [], last=True)
    s.message(BEAT, T0 + 700, 0.4)
    s.down(0.5)
    s.up(T0 + 1000, 0.6)
    acts = s.message(ACK, T0 + 1000, 0.7)
    assert spans(acts) == [
        ("GapDetected", (T0 + 600) * US_PER_S, (T0 + 1200) * US_PER_S),
        ("Backfill", (T0 + 600) * US_PER_S, (T0 + 900) * US_PER_S),
    ]
    (failed,) = of(acts, Backfill)
    s.backfill_failed(failed, 0.8)
    assert not [a for a in s.tick(T0 + 1202, 1.0) if isinstance(a, GapFilled)]  # not retried yet
    again = [a for a in s.tick(T0 + 1203, 31.0) if isinstance(a, Backfill)]
    assert again and again[0].start_us == (T0 + 600) * US_PER_S and again[0].end_us == (T0 + 1200) * US_PER_S
    after = s.backfilled(again[0], again[0].end_us, [], last=True)
    filled = GapFilled(KEY, (T0 + 600) * US_PER_S, (T0 + 1200) * US_PER_S)
    assert [a for a in after if isinstance(a, GapFilled)] == [filled]


def test_a_failed_final_backfill_is_still_fetched_after_live_bars_close() -> None:
    """The bar in progress at a resume comes from REST once it is over. When that fetch failed and
    live bars closed before its retry, the live close moved past it and the retry asked for
    nothing: the bar was never stored (a restart did not recover it either)."""
    s = live_session()
    (history,) = s.message(ACK, T0 + 10, 0.1)
    assert isinstance(history, Backfill)
    s.backfilled(history, history.end_us, [], last=True)
    s.message(match(T0 + 301, "10", 1), T0 + 301, 0.2)
    final = next(a for a in s.message(match(T0 + 610, "11", 2), T0 + 610, 0.3) if isinstance(a, Backfill))
    s.backfilled(final, final.end_us, [], last=True)
    s.down(0.5)
    s.up(T0 + 1000, 0.6)
    gap, closed_part = s.message(ACK, T0 + 1000, 0.7)  # live again from T0+1200
    assert isinstance(gap, GapDetected) and isinstance(closed_part, Backfill)
    s.backfilled(closed_part, closed_part.end_us, [], last=True)  # [600, 900): the exchange had none
    (due,) = [a for a in s.message(match(T0 + 1210, "12", 3), T0 + 1210, 1.0) if isinstance(a, Backfill)]
    assert (due.start_us, due.end_us, due.final) == ((T0 + 900) * US_PER_S, (T0 + 1200) * US_PER_S, True)
    s.backfill_failed(due, 1.1)
    published = s.message(match(T0 + 1510, "13", 4), T0 + 1510, 2.0)  # live bar T0+1200 closes first
    assert [u.bar.open_time for a in published if isinstance(a, Publish) for u in a.updates] == [
        utc_from_unix(T0 + 1200)
    ]
    (retry,) = [a for a in s.tick(T0 + 1511, 40.0) if isinstance(a, Backfill)]
    assert (retry.start_us, retry.end_us) == ((T0 + 900) * US_PER_S, (T0 + 1200) * US_PER_S)
    hole = Bar("coinbase", "BTC-USD", "5m", utc_from_unix(T0 + 900), *(Decimal(7),) * 4, Decimal(1), 1, "backfill")
    after = s.backfilled(retry, retry.end_us, [hole], last=True)
    assert [u.bar for a in after if isinstance(a, Publish) for u in a.updates] == [hole]
    assert GapFilled(KEY, (T0 + 600) * US_PER_S, (T0 + 1200) * US_PER_S) in after
    state = s.series[0]
    assert state.next_needed_us == (T0 + 1500) * US_PER_S  # the live bar after it is stored already
    assert state.agg.last_close == Decimal(12)  # flat bars go on from the live bar's close, not the hole's


# --- gaps: what a restart cost the live stream -----------------------------------------------------

ETH_1M = SeriesKey("coinbase", "ETH-USD", "1m")
SOL = SeriesKey("coinbase", "SOL-USD", "5m")


@pytest.mark.parametrize(
    ("stored", "steps", "opts", "expect"),
    [
        pytest.param(None, [("up", 1000), ("ack", 1000), ("tick", 1202)], OPTS, [],
                     id="first-start-nothing-stored-is-history"),
        pytest.param((300, "import"), [("up", 1000), ("ack", 1000), ("tick", 1202)], OPTS, [],
                     id="first-start-after-import-bars-is-history"),
        pytest.param((300, "backfill"), [("up", 1000), ("ack", 1000), ("tick", 1202)], OPTS, [],
                     id="newest-stored-bar-from-rest-is-history"),
        pytest.param(300, [("up", 600), ("ack", 600), ("tick", 700)], OPTS, [],
                     id="live-again-where-the-stored-bars-end-missed-nothing"),
        pytest.param(600, [("up", 700), ("ack", 700), ("tick", 902)], OPTS, [],
                     id="restart-within-the-stored-bar-missed-nothing"),
        pytest.param(300, [("up", 700), ("ack", 700), ("tick", 902)], OPTS,
                     [("GapDetected", 600, 900, 0), ("GapFilled", 600, 900, 1)],
                     id="restart-in-the-bar-after-the-stored-one-loses-that-bar"),
        pytest.param(300, [("up", 3010), ("ack", 3010), ("tick", 3302)], OPTS,
                     [("GapDetected", 600, 3300, 0), ("GapFilled", 600, 3300, 9)],
                     id="restart-after-missed-bars"),
        pytest.param(1500, [("up", 700), ("ack", 700), ("tick", 902), ("trade", 910), ("trade", 1210)], OPTS, [],
                     id="stored-bar-in-the-future-clock-skew-is-no-gap"),
        pytest.param(300, [("up", 700), ("down",), ("up", 1000), ("ack", 1000), ("tick", 1202)], OPTS,
                     [("GapDetected", 600, 1200, 0), ("GapFilled", 600, 1200, 2)],
                     id="a-drop-before-the-first-subscription-keeps-one-gap"),
        pytest.param(300, [("poll", 1000), ("up", 1000), ("ack", 1000), ("tick", 1202)], OPTS,
                     [("GapDetected", 600, 1200, 1), ("GapFilled", 600, 1200, 2)],
                     id="rest-polled-part-of-it-before-the-feed-came-up"),
        pytest.param(300, [("poll", 1200), ("up", 1200), ("ack", 1200)], NO_GRACE,
                     [("GapDetected", 600, 1200, 2), ("GapFilled", 600, 1200, 2)],
                     id="rest-polled-all-of-it-before-the-feed-came-up"),
        pytest.param(300, [("up", 700), ("ack", 700), ("tick", 902), ("trade", 910), ("trade", 1210), ("beat", 1250),
                           ("down",), ("up", 1300), ("ack", 1300), ("tick", 1502)], OPTS,
                     [("GapDetected", 600, 900, 0), ("GapFilled", 600, 900, 1),
                      ("GapDetected", 1200, 1500, 0), ("GapFilled", 1200, 1500, 1)],
                     id="restart-then-reconnect-each-its-own-gap"),
    ],
)
def test_a_restart_reports_the_bars_it_missed(
    stored: int | tuple[int, BarSource] | None, steps: list[tuple], opts: SessionOptions, expect: list
) -> None:
    """A series restored from a latest stored bar built from trades missed, while the process was
    down, the bars from that bar's end to the first bar built from trades again: a gap, as after
    a reconnect, filled once the backfill covering it is stored (the last number: backfilled
    bars of the range published before the action; the exchange has every candle). Stored
    `(open time, source)`; a plain open time is a live bar."""
    source: BarSource
    latest, source = stored if isinstance(stored, tuple) else (stored, "live")
    restored = {} if latest is None else {KEY: latest}
    seen = run_gaps(steps, opts, stored=restored, source=source, candles=True)
    assert [(kind, start, end, n) for key, kind, start, end, n in seen if key == KEY] == expect
    assert all(key == KEY for key, *_ in seen)


def test_series_of_one_connection_restart_from_their_own_stored_bars() -> None:
    """Each series' gap starts where its own stored bars end and ends at its own first live bar;
    a series with nothing stored is backfilled as history, no gap."""
    steps = [("up", 1000), ("ack", 1000), ("tick", 1022), ("tick", 1202)]
    seen = run_gaps(steps, keys=(KEY, ETH_1M, SOL), stored={KEY: 300, ETH_1M: 840}, candles=True)
    assert seen == [
        (KEY, "GapDetected", 600, 1200, 0),
        (ETH_1M, "GapDetected", 900, 1020, 0),
        (ETH_1M, "GapFilled", 900, 1020, 2),
        (KEY, "GapFilled", 600, 1200, 2),
    ]


def test_a_restart_gap_whose_backfill_fails_stays_open_until_a_retry_fills_it() -> None:
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS)
    s.restore(KEY, replace(candle(KEY, T0 + 300), source="live"))
    s.up(T0 + 1000, 0.1)
    acts = s.message(ACK, T0 + 1000, 0.2)
    assert spans(acts) == [
        ("GapDetected", (T0 + 600) * US_PER_S, (T0 + 1200) * US_PER_S),
        ("Backfill", (T0 + 300) * US_PER_S, (T0 + 900) * US_PER_S),  # the stored bar again, then the gap
    ]
    (failed,) = of(acts, Backfill)
    s.backfill_failed(failed, 0.3)  # the exchange's REST API is down: nothing asked before the retry delay
    assert not [a for a in s.message(match(T0 + 1210, "10", 1), T0 + 1210, 1.0) if isinstance(a, Backfill)]
    later = s.message(match(T0 + 1510, "11", 2), T0 + 1510, 2.0)  # a live bar closes meanwhile
    assert [u.bar.open_time for a in later if isinstance(a, Publish) for u in a.updates] == [utc_from_unix(T0 + 1200)]
    assert not [a for a in later if isinstance(a, GapFilled)] and s.series[0].gaps  # still open
    (retry,) = [a for a in s.tick(T0 + 1511, 40.0) if isinstance(a, Backfill)]
    assert (retry.start_us, retry.end_us) == ((T0 + 300) * US_PER_S, (T0 + 1200) * US_PER_S)
    after = s.backfilled(retry, retry.end_us, [candle(KEY, T0 + 600), candle(KEY, T0 + 900)], last=True)
    assert [u.bar.open_time for a in after if isinstance(a, Publish) for u in a.updates] == [
        utc_from_unix(T0 + 600), utc_from_unix(T0 + 900)
    ]
    filled = GapFilled(KEY, (T0 + 600) * US_PER_S, (T0 + 1200) * US_PER_S)
    assert [a for a in after if isinstance(a, GapFilled)] == [filled]
    assert s.series[0].gaps == []


def test_a_restart_on_the_feed_clock_is_a_gap_up_to_the_first_feed_time() -> None:
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS, wall_clock=False)
    s.restore(KEY, replace(candle(KEY, T0 + 300), source="live"))
    s.up(0.0, 0.0)
    assert s.message(ACK, 0.0, 0.1) == []  # live from the first time the feed tells
    acts = s.message(match(T0 + 1010, "10", 1), 0.0, 0.2)
    assert [a for a in acts if isinstance(a, GapDetected)] == [
        GapDetected(KEY, (T0 + 600) * US_PER_S, (T0 + 1200) * US_PER_S)
    ]


@pytest.mark.parametrize(
    ("source", "fetched"),
    [("live", [(300, 600, False), (600, 900, True)]), ("import", [(600, 900, True)]), ("backfill", [(600, 900, True)])],
)
def test_a_restart_fetches_the_newest_bar_built_from_trades_again(source: BarSource, fetched: list) -> None:
    """The clock may have closed the newest stored bar while a trade of it was still unread, and
    the daemon stopped before that trade amended it: built from trades, it is fetched from REST
    again (as a reconnect fetches what it cannot prove complete), though it is no part of the
    gap. An imported or backfilled bar is REST's already."""
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS)
    s.restore(KEY, replace(candle(KEY, T0 + 300), source=source))
    s.up(T0 + 700, 0.1)
    acts = s.message(ACK, T0 + 700, 0.2)
    seen = [a for a in acts if isinstance(a, Backfill)]
    for a in seen:
        acts += s.backfilled(a, a.end_us, [], last=True)
    seen += [a for a in s.tick(T0 + 902, 0.3) if isinstance(a, Backfill)]
    assert [(a.start_us // US_PER_S - T0, a.end_us // US_PER_S - T0, a.final) for a in seen] == fetched
    gaps = [(a.start_us // US_PER_S - T0, a.end_us // US_PER_S - T0) for a in acts if isinstance(a, GapDetected)]
    assert gaps == ([(600, 900)] if source == "live" else [])


@pytest.mark.parametrize(
    ("stored", "open_gaps", "at", "expect"),
    [
        pytest.param(300, [(600, 900)], 800, [("GapFilled", 600, 900, 1)],
                     id="again-in-the-same-bar-misses-nothing-new-and-fills-the-first-gap"),
        pytest.param(300, [(600, 900)], 1000,
                     [("GapDetected", 900, 1200, 0), ("GapFilled", 600, 900, 1), ("GapFilled", 900, 1200, 1)],
                     id="again-a-bar-later-misses-that-bar-only"),
        pytest.param((300, "backfill"), [(600, 900)], 1000,
                     [("GapDetected", 900, 1200, 0), ("GapFilled", 600, 900, 1), ("GapFilled", 900, 1200, 1)],
                     id="the-first-restart-amended-the-newest-bar-from-rest"),
        pytest.param(300, [(600, 900), (600, 1200)], 1000, [("GapFilled", 600, 900, 1), ("GapFilled", 600, 1200, 2)],
                     id="overlapping-gaps-recorded-before-are-all-filled"),
    ],
)
def test_a_restart_before_the_last_ones_gap_was_filled_records_each_missed_bar_once(
    stored: int | tuple[int, BarSource], open_gaps: list[tuple[int, int]], at: int, expect: list
) -> None:
    """A restart soon after another (a crash loop, a series handed on twice) finds the gap the
    last process recorded and stopped before filling: it fills that one and records only the
    bars it newly missed. Before, it recorded the same bar again (two rows for one bar, or an
    overlapping 2-bar gap whose first row was never marked filled)."""
    latest, source = stored if isinstance(stored, tuple) else (stored, "live")
    steps = [("up", at), ("ack", at), ("tick", at - at % 300 + 302)]
    seen = run_gaps(steps, stored={KEY: latest}, source=source, candles=True, open_gaps=tuple(open_gaps))
    assert [(kind, start, end, n) for _key, kind, start, end, n in seen] == expect


#: The backfill horizon of OPTS (`backfill_days` 0: a forecaster's window of 5-minute bars).
H = MIN_HISTORY_BARS * 300


@pytest.mark.parametrize(
    ("stored", "open_gaps", "at", "expect"),
    [
        pytest.param(900, [(300, 600)], 1300,
                     [("GapDetected", 1200, 1500, 0), ("GapFilled", 300, 600, 1), ("GapFilled", 1200, 1500, 1)],
                     id="behind-live-bars-fetched-again-and-filled"),
        pytest.param((900, "backfill"), [(300, 600)], 1300, [("GapFilled", 300, 600, 1)],
                     id="behind-rest-bars-fetched-again-and-filled"),
        pytest.param((600, "backfill"), [(300, 900)], 1300,
                     [("GapDetected", 900, 1500, 0), ("GapFilled", 300, 900, 2), ("GapFilled", 900, 1500, 2)],
                     id="its-last-bar-stored-and-not-marked-filled-fetched-again"),
        pytest.param(H + 900, [(300, 600)], H + 1300,
                     [("GapDetected", H + 1200, H + 1500, 0), ("GapFilled", H + 1200, H + 1500, 1)],
                     id="beyond-the-backfill-horizon-left-alone"),
        pytest.param(H + 900, [(900, 1500)], H + 1300,
                     [("GapDetected", H + 1200, H + 1500, 0), ("GapFilled", 900, 1500, 1),
                      ("GapFilled", H + 1200, H + 1500, 1)],
                     id="across-the-horizon-fetched-from-the-horizon-on"),
    ],
)
def test_a_restart_fetches_an_unfilled_gap_behind_the_stored_bars_again(
    stored: int | tuple[int, BarSource], open_gaps: list[tuple[int, int]], at: int, expect: list
) -> None:
    """A backfill failed and live bars were stored past its range before the daemon stopped: the
    restart fetches that recorded gap again (within the backfill horizon) and marks it filled.
    Before, it started after the newest stored bar and the hole stayed, its row unfilled for good."""
    latest, source = stored if isinstance(stored, tuple) else (stored, "live")
    steps = [("up", at), ("ack", at), ("tick", at - at % 300 + 302)]
    seen = run_gaps(steps, stored={KEY: latest}, source=source, candles=True, open_gaps=tuple(open_gaps))
    assert [(kind, start, end, n) for _key, kind, start, end, n in seen] == expect


def test_a_gap_behind_the_stored_bars_whose_fetch_failed_is_asked_again_at_the_next_subscription() -> None:
    s = FeedSession(PROTOCOLS["coinbase"], [KEY], OPTS)
    s.restore(KEY, replace(candle(KEY, T0 + 900), source="live", close=Decimal(12)),
              [(utc_from_unix(T0 + 300), utc_from_unix(T0 + 600))])
    s.up(T0 + 1300, 0.1)
    acts = s.message(ACK, T0 + 1300, 0.2)
    main, hole = (a for a in acts if isinstance(a, Backfill))
    assert hole.hole == ((T0 + 300) * US_PER_S, (T0 + 600) * US_PER_S) and main.hole is None
    s.backfilled(main, main.end_us, [], last=True)
    assert not [a for a in s.backfill_failed(hole, 0.3) if isinstance(a, GapFilled)]
    s.down(0.4)
    s.up(T0 + 1400, 0.5)
    (again,) = [a for a in s.message(ACK, T0 + 1400, 0.6) if isinstance(a, Backfill) and a.hole is not None]
    assert (again.start_us, again.end_us) == ((T0 + 300) * US_PER_S, (T0 + 600) * US_PER_S)
    bar = replace(candle(KEY, T0 + 300), close=Decimal(7))
    after = s.backfilled(again, again.end_us, [bar], last=True)
    assert [u.bar for a in after if isinstance(a, Publish) for u in a.updates] == [bar]
    assert GapFilled(KEY, (T0 + 300) * US_PER_S, (T0 + 600) * US_PER_S) in after
    state = s.series[0]
    assert state.next_needed_us == (T0 + 1200) * US_PER_S  # what is known of the newer bars stays
    assert state.agg.last_close == Decimal(12)  # flat bars go on from the newest bar, not the hole's


@pytest.mark.parametrize(
    ("stored", "gap_end", "at", "expect"),
    [
        pytest.param(300, 600, 1000, [("GapDetected", 600, 1200, 0), ("GapFilled", 600, 1200, 2)],
                     id="at-the-end-of-a-filled-gap"),
        pytest.param(300, 900, 1000, [("GapDetected", 900, 1200, 0), ("GapFilled", 900, 1200, 1)],
                     id="inside-a-filled-gap-the-exchange-had-no-candles-after"),
        pytest.param(300, None, 1000, [], id="no-recorded-gap-holds-it-history"),
    ],
)
def test_a_newest_bar_from_rest_in_a_recorded_gap_was_stored_while_live(
    stored: int, gap_end: int | None, at: int, expect: list
) -> None:
    """After a reconnect or restart REST stores the bars of its gap, the bar in progress too,
    and the first live bar about one bar later: a daemon stopped in between left a newest bar
    from REST that lies in that (filled) gap. The series was live: the next restart's missed
    bars are a gap. Before, they were taken as history and no gap was recorded."""
    steps = [("up", at), ("ack", at), ("tick", at - at % 300 + 302)]
    seen = run_gaps(steps, stored={KEY: stored}, source="backfill", candles=True, gap_end=gap_end)
    assert [(kind, start, end, n) for _key, kind, start, end, n in seen] == expect


def test_a_series_dropped_leaves_the_others_and_their_bar_in_progress_untouched() -> None:
    """A series handed on to another daemon leaves the connection's session; the other series
    go on with the bar in progress they had (a restart of the connection lost it: a gap)."""
    s = FeedSession(PROTOCOLS["coinbase"], [KEY, SOL], OPTS)
    s.up(T0 + 10, 0.0)
    for b in [a for a in s.message(ACK, T0 + 10, 0.1) if isinstance(a, Backfill)]:
        s.backfilled(b, b.end_us, [], last=True)
    sol = '{"type":"match","trade_id":%d,"side":"buy","size":"1","price":"%s","product_id":"SOL-USD","time":"%s"}'
    s.message(match(T0 + 301, "10", 1), T0 + 301, 0.2)  # the bar in progress of both from T0+300
    s.message(sol % (1, "5", iso_us((T0 + 301) * US_PER_S)), T0 + 301, 0.3)
    finals = [a for a in s.message(match(T0 + 610, "11", 2), T0 + 610, 0.4) if isinstance(a, Backfill)]
    assert {a.series for a in finals} == {KEY, SOL}
    s.drop([SOL])
    assert s.natives == ["BTC-USD"] and [x.key for x in s.series] == [KEY]
    out: list = []
    for b in finals:  # the dropped series' backfill comes back after the drop: nothing of it is stored
        out += s.backfilled(b, b.end_us, [candle(b.series, T0)], last=True)
    published = [u for a in out if isinstance(a, Publish) for u in a.updates]
    assert [(u.bar.series, u.kind) for u in published] == [(KEY, "backfilled"), (KEY, "closed")]
    assert published[1].bar.open == Decimal(10)  # the trade from before the drop: the bar was kept
    before = s.stats.unknown_symbol
    assert s.message(sol % (2, "6", iso_us((T0 + 611) * US_PER_S)), T0 + 611, 0.5) == []
    assert s.stats.unknown_symbol == before + 1
    acts = s.message(match(T0 + 910, "12", 3), T0 + 910, 0.6)
    assert [(u.bar.series, to_unix(u.bar.open_time) - T0) for a in acts if isinstance(a, Publish)
            for u in a.updates] == [(KEY, 600)]


def test_a_refused_symbol_is_suspended_retried_with_backoff_and_resumes_alone_once_listed() -> None:
    """Coinbase ignores a whole subscribe naming an unknown product: the other product is asked
    for again at once, the refused one is reported (once per connection) and asked for again
    after `refused_retry_s`, doubling; when the exchange lists it, it resumes on its own."""
    foo = SeriesKey("coinbase", "FOO-USD", "5m")
    refusal = '{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is not a valid product"}'
    opts = replace(OPTS, refused_retry_s=60.0, refused_retry_max_s=100.0, stall_timeout_s=1000.0)
    s = FeedSession(PROTOCOLS["coinbase"], [KEY, foo], opts)
    s.up(T0 + 10, 0.0, ["BTC-USD", "FOO-USD"])
    acts = s.message(refusal, T0 + 10, 0.1)
    assert kinds(acts) == ["Subscribe", "SubscriptionRefused"]
    (sub,), (told,) = of(acts, Subscribe), of(acts, SubscriptionRefused)
    assert '"product_ids":["BTC-USD"]' in sub.messages[0] and len(sub.messages) == 1
    assert told.series == (foo,) and told.log and told.retry_in_s == 60.0
    assert told.reason == "Failed to subscribe: FOO-USD is not a valid product"
    assert state(s) is State.SUBSCRIBING  # the other product's answer is still due
    acts = s.message(ACK, T0 + 10, 0.2)
    assert state(s) is State.BACKFILLING and [a.series for a in of(acts, Backfill)] == [KEY]
    assert s.refused_reason(foo) == told.reason and s.refused_reason(KEY) is None
    assert s.subscribable(1.0) == ["BTC-USD"]  # a reconnect now leaves it out
    assert "Subscribe" not in kinds(s.tick(T0 + 20, 59.0))
    (sub,) = of(s.tick(T0 + 71, 61.0), Subscribe)
    assert '"product_ids":["FOO-USD"]' in sub.messages[0]
    acts = s.message(refusal, T0 + 71, 61.1)
    assert kinds(acts) == ["SubscriptionRefused"]
    (again,) = of(acts, SubscriptionRefused)
    assert not again.log and again.retry_in_s == 100.0  # doubled, capped
    assert "Subscribe" not in kinds(s.tick(T0 + 120, 160.0))
    acts = s.tick(T0 + 172, 162.0)
    assert kinds(acts)[:1] == ["Subscribe"]
    acts = s.message(ACK, T0 + 172, 162.1)  # listed now
    assert [a.series for a in of(acts, SubscriptionAccepted)] == [(foo,)]
    assert [a.series for a in of(acts, Backfill)] == [foo]
    assert s.refused_reason(foo) is None and s.subscribable(163.0) == ["BTC-USD", "FOO-USD"]


def test_a_refusal_naming_no_symbol_for_several_asks_for_each_on_its_own() -> None:
    """Binance refuses a malformed request as a whole, naming no stream: which symbol it was,
    nobody can tell, so each is asked for on its own (one answer each)."""
    keys = [SeriesKey("binance", "BTC-USDT", "5m"), SeriesKey("binance", "ETH-USDT", "5m")]
    s = FeedSession(PROTOCOLS["binance"], keys, OPTS)
    s.up(T0 + 10, 0.0, ["BTCUSDT", "ETHUSDT"])
    acts = s.message('{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}', T0 + 10, 0.1)
    assert kinds(acts) == ["Subscribe"] and [len(a.messages) for a in of(acts, Subscribe)] == [2]
    acts = s.message('{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}', T0 + 10, 0.2)
    assert [a.series for a in of(acts, SubscriptionRefused)] == [(keys[0],)]
    acts = s.message('{"result":null,"id":1}', T0 + 10, 0.3)
    assert state(s) is State.BACKFILLING and [a.series for a in of(acts, Backfill)] == [keys[1]]
