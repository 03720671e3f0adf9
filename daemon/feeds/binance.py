"""Binance spot: `<symbol>@trade` streams (and `@aggTrade`), `/api/v3/klines`.

`m: true` means the buyer was the maker, so the taker sold. Combined-stream messages come wrapped
in `{"stream": …, "data": …}`; raw `/ws` messages come bare. Binance has no application heartbeat:
the server's websocket pings (answered by the websockets library) are the keep-alive.

A SUBSCRIBE of a well-formed stream is acknowledged (`{"result":null,"id":1}`) whether or not
the symbol is listed; an unlisted one then stays silent, and only REST says so (HTTP 400
`{"code":-1121,"msg":"Invalid symbol."}`). A malformed stream name refuses the whole request:
`{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from daemon.feeds.base import (
    ACK,
    BAD_JSON,
    NO_ROWS,
    OTHER,
    TRADES,
    BadMessage,
    Block,
    Candle,
    CandleColumns,
    CandleQuery,
    ClientRequest,
    ExchangeProtocol,
    HotRow,
    ParseResult,
    Row,
    SimState,
    SymbolFormat,
    Trade,
    error,
    interval_name,
    loads,
    malformed,
    number_text,
    refused,
)
from daemon.feeds.fields import (
    MAX_INT_ID,
    MAX_US,
    MILLIS,
    MIN_INT_ID,
    MIN_US,
    US_PER_MS,
    hot_columns,
    hot_numbers,
    int_column,
    price_text,
    trade_size_text,
    us_from_ms,
)
from daemon.feeds.schema import decoder, ignored, results, union

_INTERVALS = {60: "1m", 300: "5m", 900: "15m", 3600: "1h"}
_INTERVAL_S = {v: k for k, v in _INTERVALS.items()}
_OTHER_EVENTS = frozenset(
    {"depthUpdate", "kline", "24hrTicker", "24hrMiniTicker", "avgPrice", "1hTicker", "4hTicker", "1dTicker"}
)


# --- the fast path's schema: the trade events in full (an unknown key is `scan`'s), the events
# ignored by their tag alone
class _TradeFields(msgspec.Struct, tag_field="e", forbid_unknown_fields=True, kw_only=True):
    s: str
    p: str
    q: str
    T: int
    m: bool
    E: int | None = None
    M: bool | None = None


class _Trade(_TradeFields, tag="trade", kw_only=True):
    t: int
    b: int | None = None  # buyer/seller order ids (older streams)
    a: int | None = None


class _AggTrade(_TradeFields, tag="aggTrade", kw_only=True):
    a: int
    f: int | None = None
    l: int | None = None  # noqa: E741 - Binance's key


class _BookTicker(msgspec.Struct, forbid_unknown_fields=True):
    """The one frequent frame without an event type (so without "e", "result", "code", "error")."""

    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


_IGNORED = ignored("e", _OTHER_EVENTS)
_OTHER_RESULTS = results(_IGNORED, OTHER)
_EVENTS = (_Trade, _AggTrade, *_IGNORED)
_DECODE_RAW = decoder(*_EVENTS)
#: trade frames only (a block): a smaller union to resolve
_DECODE_TRADES = decoder(_Trade, _AggTrade)
_DECODE_COMBINED = decoder(
    msgspec.defstruct("_Combined", [("stream", str), ("data", union(*_EVENTS))], forbid_unknown_fields=True)
)
_DECODE_BOOK = decoder(_BookTicker)
_DECODE_COMBINED_BOOK = decoder(
    msgspec.defstruct("_CombinedBook", [("stream", str), ("data", _BookTicker)], forbid_unknown_fields=True)
)


class Binance(ExchangeProtocol):
    name = "binance"
    ws_url = "wss://stream.binance.com:9443/ws"
    rest_url = "https://api.binance.com"
    ws_path = "/ws"
    max_candles = 1000
    rest_min_interval_s = 0.1
    send_interval_s = 0.25  # at most 5 incoming messages a second per connection
    symbols = SymbolFormat("")
    trade_marker = '"e":"trade"'
    candle_columns = CandleColumns(time=0, open=1, high=2, low=3, close=4, volume=5, count=8, time_unit="ms")

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        params = [f"{n.lower()}@trade" for n in natives]
        return [orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": 1}).decode()]

    def fast_scan(self, text: str) -> tuple[ParseResult, list[HotRow]] | None:
        if text.startswith('{"e"'):  # raw /ws frames, the daemon's subscription: decoded at once
            msg = _DECODE_RAW(text)
        elif text.startswith('{"stream"'):
            if text.find('@bookTicker"', 10, 60) > 0:
                _DECODE_COMBINED_BOOK(text)
                return OTHER, NO_ROWS
            msg = _DECODE_COMBINED(text).data
        elif text.startswith('{"u"'):
            _DECODE_BOOK(text)
            return OTHER, NO_ROWS
        else:
            msg = _DECODE_RAW(text)
        kind = type(msg)
        if kind is _Trade or kind is _AggTrade:
            tid = msg.t if kind is _Trade else msg.a
            t = msg.T * US_PER_MS  # `us_from_ms` and `trade_id_ok` of ints, inline
            p = msg.p
            q = msg.q
            pf = hot_numbers(p, q)
            if pf is None or not MIN_US <= t < MAX_US or not MIN_INT_ID <= tid < MAX_INT_ID:
                return None
            return TRADES, [(msg.s, tid, t, p, pf, q, "sell" if msg.m else "buy")]
        return _OTHER_RESULTS.get(kind)

    def fast_block(self, texts: Sequence[str]) -> Block | None:
        try:
            msgs = list(map(_DECODE_TRADES, texts))
        except msgspec.MsgspecError:  # combined-stream frames (or anything else: then None below)
            msgs = [m.data for m in map(_DECODE_COMBINED, texts)]
        # an ignored event has no `p` (AttributeError); a trade among aggTrades has `a` None and
        # an aggTrade among trades no `t` (None or AttributeError, refused by the id bounds)
        ids = [m.t for m in msgs] if type(msgs[0]) is _Trade else [m.a for m in msgs]
        ms = [m.T for m in msgs]
        ps = [m.p for m in msgs]
        qs = [m.q for m in msgs]
        keys = hot_columns(ps, qs)
        if keys is None or not int_column(ms, MILLIS) or not (min(ids) >= MIN_INT_ID and max(ids) < MAX_INT_ID):
            return None
        return Block([m.s for m in msgs], ids, ms, MILLIS, ps, keys, qs)

    def scan(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return BAD_JSON, NO_ROWS
        if type(msg) is not dict:
            return malformed("not_an_object"), NO_ROWS
        event = msg.get("e")
        if event is None and "stream" in msg and "data" in msg:
            msg = msg["data"]
            if type(msg) is not dict:
                return malformed("not_an_object"), NO_ROWS
            event = msg.get("e")
        if event == "trade" or event == "aggTrade":
            tid = msg["t"] if event == "trade" else msg["a"]
            if type(tid) is not int:
                raise BadMessage("bad_trade_id")
            maker_buyer = msg["m"]
            if maker_buyer is True:
                side = "sell"
            elif maker_buyer is False:
                side = "buy"
            else:
                raise BadMessage("bad_side")
            native = msg["s"]
            if type(native) is not str:
                raise BadMessage("bad_symbol")
            t = us_from_ms(msg["T"])
            if t is None:
                raise BadMessage("bad_time")
            p = price_text(msg["p"])
            if p is None:
                raise BadMessage("bad_price")
            q = trade_size_text(msg["q"])
            if q is None:
                raise BadMessage("bad_size")
            return TRADES, [(native, tid, t, p, q, side)]
        if event in _OTHER_EVENTS:
            return OTHER, NO_ROWS
        if event is None:
            if "result" in msg and "id" in msg:
                return ACK, NO_ROWS
            if ("code" in msg and "msg" in msg) or "error" in msg:
                err = msg.get("error")
                text = str(err.get("msg") if isinstance(err, dict) else msg.get("msg") or err)
                if "id" in msg:  # the answer to a request of ours: SUBSCRIBE is the only one sent
                    return refused(text), NO_ROWS
                return error(f"exchange_error:{text[:60]}"), NO_ROWS
            if "u" in msg and "b" in msg and "a" in msg:  # bookTicker has no event type
                return OTHER, NO_ROWS
        return malformed("unexpected_type"), NO_ROWS

    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        return (
            f"/api/v3/klines?symbol={native}&interval={interval_name(interval_s, _INTERVALS)}"
            f"&startTime={start * US_PER_MS}&endTime={end * US_PER_MS - 1}&limit={self.max_candles}"
        )

    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        return self.candle_columns.candles(loads(text))

    # simulator side -----------------------------------------------------------------------------
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        if msg.get("method") == "SUBSCRIBE" and isinstance(msg.get("params"), list):
            natives = tuple(p.split("@")[0].upper() for p in msg["params"] if isinstance(p, str))
            return ClientRequest("subscribe", natives, request_id=msg.get("id"))
        return None

    def render_ack(self, request: ClientRequest) -> list[str]:
        return [orjson.dumps({"result": None, "id": request.request_id}).decode()]

    def rest_refusal(self, status: int, body: bytes) -> str | None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if status == 400 and isinstance(doc, dict) and doc.get("code") == -1121:
            return str(doc.get("msg"))
        return None

    def render_rest_unknown(self, native: str) -> tuple[int, str]:
        return 400, '{"code":-1121,"msg":"Invalid symbol."}'

    def render_trade(self, trade: Trade, state: SimState) -> str:
        ms = trade.time_us // 1000
        return orjson.dumps(
            {
                "e": "trade",
                "E": ms,
                "s": trade.native_symbol,
                "t": int(trade.trade_id or 0),
                "p": number_text(trade.price),
                "q": number_text(trade.size),
                "T": ms,
                "m": trade.side == "sell",
                "M": True,
            }
        ).decode()

    def render_malformed(self) -> str:
        return '{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"NaN","q":"1","T":1,"m":true}'

    def candle_query(self, path: str, query: dict[str, str]) -> CandleQuery | None:
        if path.rstrip("/") != "/api/v3/klines":
            return None
        interval_s = _INTERVAL_S[query.get("interval", "1m")]
        start = int(query["startTime"]) // 1000 if "startTime" in query else None
        end = int(query["endTime"]) // 1000 + 1 if "endTime" in query else None
        return CandleQuery(query["symbol"], interval_s, start, end, min(int(query.get("limit", "500")), 1000))

    def render_candles(self, candles: Sequence[Candle], query: CandleQuery) -> str:
        rows = []
        for c in candles:
            t = c.open_time * 1000
            rows.append(
                [
                    t,
                    number_text(c.open),
                    number_text(c.high),
                    number_text(c.low),
                    number_text(c.close),
                    number_text(c.volume),
                    t + query.interval_s * 1000 - 1,
                    "0",
                    c.trade_count if c.trade_count is not None else 0,
                    "0",
                    "0",
                    "0",
                ]
            )
        return orjson.dumps(rows).decode()


PROTOCOL = Binance()
