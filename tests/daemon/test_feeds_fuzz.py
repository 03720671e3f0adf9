"""Hostile frames against every exchange parser (CI size; bench/feed_fuzz.py runs 100k each).

Frames are mutated from the real captures (see framefuzz.py). What must hold for every frame:
nothing escapes `parse`, no trade that is not a valid trade comes out, a frame whose trade fields
were poisoned yields no trade, and every rejected frame carries a reason. The slowest frame is
reported, not asserted (timing belongs to the bench).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.feeds import PROTOCOLS
from daemon.feeds.base import NO_ROWS
from db.records import Bar
from tests.daemon.framefuzz import Frame, Mutator, fuzz, seed_bars, seed_frames

FRAMES = 5000


@pytest.fixture(scope="module")
def bars(shared_dir: Path) -> list[Bar]:
    return seed_bars(shared_dir)


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_mutated_real_frames(
    shared_dir: Path, bars: list[Bar], exchange: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seeds = seed_frames(shared_dir, exchange, bars)
    rep = fuzz(exchange, Mutator(exchange, seeds, seed=1).frames(FRAMES))
    with capsys.disabled():
        print(f"\n{exchange}: {rep.frames} frames, slowest {rep.slowest_s * 1e3:.1f} ms ({rep.slowest_mutation})")
    assert rep.frames == FRAMES
    assert rep.escapes == 0, rep.examples
    assert rep.bad_trades == 0, rep.examples
    assert rep.poisoned_trades == 0, rep.examples
    assert rep.uncounted == 0
    assert not any(r.startswith("internal_error") for r in rep.reasons), rep.reasons
    # the attack reached the trade path: trades were produced and poisoned ones were rejected by reason
    assert rep.trades > 0 and rep.kinds["malformed"] > FRAMES // 3
    assert {"bad_price", "bad_size", "bad_time"} <= set(rep.reasons), rep.reasons


def _trade_frame(exchange: str, field_value: dict[str, object]) -> str:
    """One real-shaped trade frame of `exchange` with some fields replaced (raw JSON text values)."""
    base = {
        "coinbase": '{"type":"match","trade_id":1,"side":"buy","size":SIZE,"price":PRICE,"product_id":"BTC-USD",'
        '"time":TIME}',
        "binance": '{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":PRICE,"q":SIZE,"T":TIME,"m":true,"M":true}',
        "kraken": '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":PRICE,'
        '"qty":SIZE,"ord_type":"market","trade_id":1,"timestamp":TIME}]}',
        "bitstamp": '{"data":{"id":1,"timestamp":"1606780830","amount_str":SIZE,"price_str":PRICE,"type":0,'
        '"microtimestamp":TIME},"channel":"live_trades_btcusd","event":"trade"}',
        "poloniex": '{"channel":"trades","data":[{"symbol":"BTC_USDT","quantity":SIZE,"takerSide":"buy",'
        '"createTime":TIME,"price":PRICE,"id":"1"}]}',
    }[exchange]
    good = {
        "coinbase": {"PRICE": '"19695.87"', "SIZE": '"0.5"', "TIME": '"2020-12-01T00:00:30.000000Z"'},
        "binance": {"PRICE": '"19695.87"', "SIZE": '"0.5"', "TIME": "1606780830000"},
        "kraken": {"PRICE": "19695.87", "SIZE": "0.5", "TIME": '"2020-12-01T00:00:30.000000Z"'},
        "bitstamp": {"PRICE": '"19695.87"', "SIZE": '"0.5"', "TIME": '"1606780830000000"'},
        "poloniex": {"PRICE": '"19695.87"', "SIZE": '"0.5"', "TIME": "1606780830000"},
    }[exchange]
    text = base
    for k, v in {**good, **field_value}.items():
        text = text.replace(k, str(v))
    return text


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_the_well_formed_frame_is_a_trade(exchange: str) -> None:
    res = PROTOCOLS[exchange].parse(_trade_frame(exchange, {}))
    assert res.kind == "trade" and len(res.trades) == 1, res
    assert str(res.trades[0].price) == "19695.87"


HOSTILE = [
    ("PRICE", "1e999999", "bad_price"),
    ("PRICE", '"1e999999"', "bad_price"),
    ("PRICE", '"NaN"', "bad_price"),
    ("PRICE", '"Infinity"', "bad_price"),
    ("PRICE", '"-19695.87"', "bad_price"),
    ("PRICE", '"0"', "bad_price"),
    ("PRICE", '"1e20"', "bad_price"),
    ("PRICE", '"1E+999999999"', "bad_price"),
    ("PRICE", '"١٢٣"', "bad_price"),
    ("SIZE", '"-0.5"', "bad_size"),
    ("SIZE", '"1e-999999"', "bad_size"),
    ("SIZE", '"' + "9" * 5000 + '"', "bad_size"),
    ("TIME", '"1e999999"', "bad_time"),
    ("TIME", "99999999999999999999", "bad_time"),
]


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@pytest.mark.parametrize(("field", "value", "reason"), HOSTILE)
def test_hostile_numbers_are_a_counted_reason(exchange: str, field: str, value: str, reason: str) -> None:
    res = PROTOCOLS[exchange].parse(_trade_frame(exchange, {field: value}))
    assert res.kind == "malformed" and not res.trades
    assert res.reason in (reason, "bad_json"), res.reason  # 1e999999 as a bare JSON number is not JSON to orjson


def test_kraken_v1_time_of_1e999999_is_rejected_not_raised() -> None:
    """The frame that killed `barcast ingest` (decimal.Overflow in the seconds-to-µs conversion)."""
    frame = '[1665,[["0.00000101","150.0","1e999999","s","l",""]],"trade","WAVES/EUR"]'
    res = PROTOCOLS["kraken"].parse(frame)
    assert (res.kind, res.reason, res.trades) == ("malformed", "bad_time", ())
    assert PROTOCOLS["kraken"].scan_safe('[1,[["1","1","1e-999999999","s","l",""]],"trade","X/Y"]')[1] is NO_ROWS


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_structural_limits(exchange: str) -> None:
    proto = PROTOCOLS[exchange]
    big = '{"type":"' + "x" * (proto.max_frame_bytes + 1) + '"}'
    assert proto.parse(big).reason == "frame_too_large"
    assert proto.parse("[" * 100_000 + "]" * 100_000).kind == "malformed"


@pytest.mark.parametrize("exchange", ["kraken", "poloniex"])
def test_too_many_trades_in_one_frame(exchange: str) -> None:
    proto = PROTOCOLS[exchange]
    one = _trade_frame(exchange, {})
    head, _, rest = one.partition('"data":[')
    item = rest[: rest.rindex("]")]
    many = head + '"data":[' + ",".join([item] * (proto.max_trades + 1)) + "]}"
    assert proto.parse(many).reason == "too_many_trades"
    ok = head + '"data":[' + ",".join([item] * proto.max_trades) + "]}"
    assert len(proto.parse(ok).trades) == proto.max_trades


def test_frames_are_deterministic(shared_dir: Path, bars: list[Bar]) -> None:
    seeds = seed_frames(shared_dir, "binance", bars)
    a = [f.text for f in Mutator("binance", seeds, seed=3).frames(50)]
    b = [f.text for f in Mutator("binance", seeds, seed=3).frames(50)]
    assert a == b and all(isinstance(f, Frame) for f in Mutator("binance", seeds).frames(3))


@pytest.mark.parametrize("exchange", ["coinbase", "kraken"])
def test_an_impossible_iso_time_is_rejected_every_time(exchange: str) -> None:
    """The minute cache of the ISO fast path once kept a year-2221 minute and let its second
    occurrence through (found by bench/feed_fuzz.py at 100k frames)."""
    frame = _trade_frame(exchange, {"TIME": '"2221-04-17T16:43:37.089723Z"'})
    for _ in range(3):
        assert PROTOCOLS[exchange].parse(frame).reason == "bad_time"
