"""Exchange parsers on real captures, render->parse round trips, REST candles, and fuzz."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.feeds import PROTOCOLS
from daemon.feeds.base import Candle, CandleQuery, ParseResult, SimState, Trade, iso_us
from daemon.feeds.capture import parse_lines, read_capture

CAPTURES = {
    "coinbase": "COINBASE.ws.28.0",
    "binance": "BINANCE.ws.1.0",
    "kraken": "KRAKEN.ws.48.0",
    "poloniex": "POLONIEX.ws.1.0",
}


def run_capture(shared_dir: Path, exchange: str) -> tuple[Counter[str], list[Trade], list[ParseResult]]:
    proto = PROTOCOLS[exchange]
    kinds: Counter[str] = Counter()
    trades: list[Trade] = []
    results = []
    for rec in read_capture(shared_dir / "captures" / CAPTURES[exchange]):
        res = proto.parse(rec.raw)
        kinds[res.kind] += 1
        trades.extend(res.trades)
        results.append(res)
    return kinds, trades, results


@pytest.mark.parametrize("exchange", sorted(CAPTURES))
def test_every_capture_parses_without_malformed(shared_dir: Path, exchange: str) -> None:
    kinds, trades, results = run_capture(shared_dir, exchange)
    assert kinds["malformed"] == 0, [r.reason for r in results if r.kind == "malformed"][:5]
    assert kinds["error"] == 0
    assert trades and all(t.exchange == exchange for t in trades)


def test_coinbase_capture(shared_dir: Path) -> None:
    kinds, trades, _ = run_capture(shared_dir, "coinbase")
    raw = (shared_dir / "captures" / "COINBASE.ws.28.0").read_text()
    assert len(trades) == raw.count('"type":"match"') + raw.count('"type":"last_match"') == 107
    assert kinds["ack"] == 3 and kinds["other"] == 9719 + 10 + 107  # l2update, snapshot, ticker
    t = next(t for t in trades if t.trade_id == "280232")
    assert (t.symbol, t.native_symbol, t.price, t.size, t.side) == (
        "SKL-BTC",
        "SKL-BTC",
        Decimal("0.00001305"),
        Decimal("985"),
        "buy",
    )  # maker sold: taker bought
    assert iso_us(t.time_us) == "2021-04-17T16:43:37.089723Z"
    assert str(t.price) == "0.00001305"


def test_binance_capture(shared_dir: Path) -> None:
    kinds, trades, _ = run_capture(shared_dir, "binance")
    assert len(trades) == 2 and kinds["trade"] == 2
    t = trades[0]
    assert (t.symbol, t.native_symbol, t.trade_id, t.price, t.size, t.side) == (
        "NKN-USDT",
        "NKNUSDT",
        "15683430",
        Decimal("0.35280000"),
        Decimal("58.00000000"),
        "buy",
    )
    assert str(t.price) == "0.35280000" and t.time_us == 1633998523963000
    assert trades[1].symbol == "LRC-BTC" and trades[1].price == Decimal("0.00000638")


def test_kraken_v1_capture(shared_dir: Path) -> None:
    kinds, trades, _ = run_capture(shared_dir, "kraken")
    assert kinds == Counter({"heartbeat": 30, "ack": 10, "trade": 8, "other": 1})
    assert len(trades) == 10
    t = trades[0]
    assert (t.symbol, t.trade_id, t.price, t.size, t.side, t.time_us) == (
        "XMR-USD",
        None,
        Decimal("354.11000000"),
        Decimal("0.89594024"),
        "sell",
        1618678142557535,
    )
    sc = next(t for t in trades if t.native_symbol == "SC/EUR")
    assert sc.size == Decimal("15979.71727919") and sc.side == "sell"


def test_poloniex_capture(shared_dir: Path) -> None:
    kinds, trades, _ = run_capture(shared_dir, "poloniex")
    assert kinds["trade"] == 6 and kinds["ack"] == 2
    t = next(t for t in trades if t.trade_id == "60184114")
    assert (t.symbol, t.price, t.size, t.side, t.time_us) == (
        "BTC-USDT",
        Decimal("21614.59"),
        Decimal("0.01149"),
        "sell",
        1661123520381000,
    )


def test_kraken_v2_numbers_are_exact() -> None:
    text = (
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
        '"price":30000.123456789012345678,"qty":1e-8,"ord_type":"limit","trade_id":4665846,'
        '"timestamp":"2023-09-25T07:48:36.925533Z"}]}'
    )
    (t,) = PROTOCOLS["kraken"].parse(text).trades
    assert t.price == Decimal("30000.123456789012345678") and str(t.price) == "30000.123456789012345678"
    assert t.size == Decimal("1e-8") and t.trade_id == "4665846" and t.symbol == "BTC-USD"
    assert PROTOCOLS["kraken"].parse('{"channel":"heartbeat"}').kind == "heartbeat"
    assert (
        PROTOCOLS["kraken"]
        .parse('{"method":"subscribe","result":{"channel":"trade","symbol":"BTC/USD"},"success":true}')
        .kind
        == "ack"
    )


def test_bitstamp_documented_messages() -> None:
    p = PROTOCOLS["bitstamp"]
    text = (
        '{"data": {"id": 271963343, "timestamp": "1676468497", "amount": 0.0041, "amount_str": "0.00410000",'
        ' "price": 22179, "price_str": "22179", "type": 1, "microtimestamp": "1676468497113000",'
        ' "buy_order_id": 1, "sell_order_id": 2}, "channel": "live_trades_btcusd", "event": "trade"}'
    )
    (t,) = p.parse(text).trades
    assert (t.symbol, t.trade_id, t.price, t.size, t.side, t.time_us) == (
        "BTC-USD",
        "271963343",
        Decimal("22179"),
        Decimal("0.00410000"),
        "sell",
        1676468497113000,
    )
    assert p.parse('{"event":"bts:subscription_succeeded","channel":"live_trades_btcusd","data":{}}').kind == "ack"
    rec = p.parse('{"event":"bts:request_reconnect","channel":"","data":""}')
    assert rec.reconnect and rec.kind == "other"


def test_coinbase_heartbeat_carries_exchange_time() -> None:
    res = PROTOCOLS["coinbase"].parse(
        '{"type":"heartbeat","sequence":1,"last_trade_id":2,"product_id":"BTC-USD","time":"2021-04-17T16:43:37.5Z"}'
    )
    assert res.kind == "heartbeat" and res.time_us == 1618677817500000


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_render_then_parse_round_trips(exchange: str) -> None:
    """The simulator speaks through the same module: whatever it renders parses back identically."""
    p = PROTOCOLS[exchange]
    native = p.native_symbol("BTC-USDT")
    for side in ("buy", "sell"):
        t = Trade(
            exchange,
            "BTC-USDT",
            native,
            "12345",
            1_608_000_000_123_456 if exchange in ("coinbase", "kraken", "bitstamp") else 1_608_000_000_123_000,
            Decimal("19695.87000001"),
            Decimal("0.000125"),
            side,
        )  # type: ignore[arg-type]
        (back,) = p.parse(p.render_trade(t, SimState(now_us=t.time_us))).trades
        assert back == t
    assert p.parse(p.render_malformed()).kind == "malformed"
    sub = p.parse_client(p.subscribe_messages([native])[0])
    assert sub.kind == "subscribe" and sub.natives == (native,)
    assert all(p.parse(m).kind == "ack" for m in p.render_ack(sub))
    for hb in p.render_server_heartbeat([native], SimState(now_us=1_608_000_000_000_000)):
        assert p.parse(hb).kind == "heartbeat"
    if (ping := p.client_heartbeat()) is not None:
        req = p.parse_client(ping)
        assert req.kind == "heartbeat"
        assert all(p.parse(m).kind == "heartbeat" for m in p.render_heartbeat_reply(req, SimState(now_us=0)))


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_rest_candles_round_trip(exchange: str) -> None:
    p = PROTOCOLS[exchange]
    native = p.native_symbol("BTC-USDT")
    start = 1_608_000_000 - 1_608_000_000 % 300
    candles = [
        Candle(
            start + 300 * i,
            Decimal("19695.87"),
            Decimal("19720.0"),
            Decimal("19578.96"),
            Decimal("19607.03"),
            Decimal("794.500517") if i else Decimal("0.0"),
            4,
        )
        for i in range(3)
    ]
    path, _, qs = p.candles_path(native, 300, start, start + 900).partition("?")
    query = dict(kv.split("=", 1) for kv in qs.split("&"))
    from urllib.parse import unquote

    q = p.candle_query(unquote(path), {k: unquote(v) for k, v in query.items()})
    assert isinstance(q, CandleQuery) and q.native_symbol == native and q.interval_s == 300
    assert q.start is not None and q.start <= start and (q.end is None or q.end >= start + 900)
    back = p.parse_candles(p.render_candles(candles, q), 300)
    assert [(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in back] == [
        (c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles
    ]
    assert str(back[0].high) in ("19720.0", "19720")  # exact text kept where the format is text


def test_capture_reader_skips_metadata_and_reads_json_lines() -> None:
    lines = [
        "wss://x <-> 1.5",
        'wss://x <- 1.6: {"type":"subscribe"}',
        '1.7: {"a": "b: c"}',
        "",
        '{"plain": 1}',
    ]
    got = list(parse_lines(lines))
    assert [(r.time, r.raw) for r in got] == [(1.7, '{"a": "b: c"}'), (None, '{"plain": 1}')]


# --- fuzz ---------------------------------------------------------------------------------------


def _sample_messages() -> dict[str, str]:
    t = Trade("x", "BTC-USDT", "", "1", 1_608_000_000_000_000, Decimal("1.5"), Decimal("2"), "buy")
    out = {}
    for name, p in PROTOCOLS.items():
        native = p.native_symbol("BTC-USDT")
        out[name] = p.render_trade(
            Trade(name, t.symbol, native, "1", t.time_us, t.price, t.size, "buy"), SimState(now_us=t.time_us)
        )
    return out


SAMPLES = _sample_messages()
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["NaN", "-1", "0", "1e999999", "Infinity", "1" * 80, "-0.0", "", "2021-13-45T99:99:99Z"]),
)
json_values = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def _mutate(doc: object, path: list, value: object) -> object:
    if not path:
        return value
    if isinstance(doc, dict):
        key = path[0] % len(doc) if doc else 0
        k = list(doc)[key] if doc else "x"
        return {**doc, k: _mutate(doc.get(k), path[1:], value)}
    if isinstance(doc, list) and doc:
        i = path[0] % len(doc)
        return [*doc[:i], _mutate(doc[i], path[1:], value), *doc[i + 1 :]]
    return value


def assert_counted(res: ParseResult) -> None:
    assert isinstance(res, ParseResult)
    assert res.kind in ("trade", "heartbeat", "ack", "other", "error", "malformed")
    if res.kind == "malformed":
        assert res.reason
    for t in res.trades:
        assert t.price > 0 and t.size >= 0 and t.price.is_finite()


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_fuzz_random_bytes(exchange: str, data: bytes) -> None:
    assert_counted(PROTOCOLS[exchange].parse(data))
    assert_counted(PROTOCOLS[exchange].parse(data.decode("latin-1")))


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=0, max_value=400))
def test_fuzz_truncated_json(exchange: str, cut: int) -> None:
    text = SAMPLES[exchange]
    res = PROTOCOLS[exchange].parse(text[: cut % len(text)])
    assert_counted(res)
    assert res.kind == "malformed"


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=4), value=json_values)
def test_fuzz_wrong_types_and_values(exchange: str, path: list[int], value: object) -> None:
    doc = json.loads(SAMPLES[exchange])
    mutated = json.dumps(_mutate(doc, path, value))
    assert_counted(PROTOCOLS[exchange].parse(mutated))


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@pytest.mark.parametrize("bad", ["NaN", "-5", "0", "1e999999999", "9" * 70, "Infinity", "nan", "1_000", " 1"])
def test_bad_prices_are_malformed(exchange: str, bad: str) -> None:
    p = PROTOCOLS[exchange]
    text = SAMPLES[exchange]
    if exchange == "kraken" and bad == " 1":
        return  # Kraken sends JSON numbers: " 1" is a valid number there
    assert '"1.5"' in text or ":1.5" in text or '"price":1.5' in text
    mutated = text.replace('"1.5"', json.dumps(bad)).replace(":1.5,", f":{bad},")
    res = p.parse(mutated)
    assert res.kind == "malformed", (exchange, bad, mutated)


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@pytest.mark.parametrize("bad", ["0", "0.0", "0.00000000", "00.", "-2.25", "NaN", "1e99"])
def test_bad_sizes_are_malformed_a_zero_size_too(exchange: str, bad: str) -> None:
    """A trade of nothing is not a trade: a zero size is counted malformed like a negative one,
    on the full parser and on the session's hot path alike."""
    p = PROTOCOLS[exchange]
    t = 1_608_000_000_000_000
    trade = Trade(exchange, "BTC-USDT", p.native_symbol("BTC-USDT"), "1", t, Decimal("1.5"), Decimal("2.25"), "buy")
    text = p.render_trade(trade, SimState(now_us=t))
    assert p.parse(text).kind == "trade" and p.scan_hot(text)[1]
    mutated = text.replace('"2.25"', json.dumps(bad)).replace(":2.25", f":{bad}")
    assert mutated != text, text
    res = p.parse(mutated)
    assert res.kind == "malformed", (exchange, bad, mutated)
    kind, rows = p.scan_hot(mutated)
    assert kind.kind == "malformed" and not rows, (exchange, bad, mutated)
