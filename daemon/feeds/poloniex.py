"""Poloniex v3 public websocket: `trades` channel, `/markets/{symbol}/candles`.

`quantity` is the base size (what bars count as volume) and `amount` the quote notional.
The client must send `{"event": "ping"}` at least every 30 s or the server disconnects.

A failed subscription is answered `{"event":"error","message":"..."}` without naming the symbol,
so the daemon subscribes one symbol a message: each answer (in order) is that symbol's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from daemon.feeds.base import (
    ACK,
    BAD_JSON,
    HEARTBEAT,
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
    interval_name,
    loads,
    malformed,
    number_text,
    refused,
)
from daemon.feeds.fields import (
    MILLIS,
    US_PER_MS,
    hot_columns,
    hot_numbers,
    int_column,
    price_text,
    trade_id_ok,
    trade_ids_ok,
    trade_size_text,
    us_from_ms,
)
from daemon.feeds.schema import decoder, ignored, results

_INTERVALS = {60: "MINUTE_1", 300: "MINUTE_5", 900: "MINUTE_15", 3600: "HOUR_1"}
_INTERVAL_S = {v: k for k, v in _INTERVALS.items()}
_OTHER_CHANNELS = frozenset({"book", "book_lv2", "ticker", "candles_minute_1", "candles_minute_5", "auth"})
_SIDES = frozenset({"buy", "sell"})


# --- the fast path's schema (see schema.py): trades in full, the rest by channel (no event key)
class _Row(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    symbol: str
    quantity: str
    takerSide: str
    createTime: int
    price: str
    id: int | str
    amount: str | None = None
    ts: int | None = None


class _Trades(msgspec.Struct, tag_field="channel", tag="trades", forbid_unknown_fields=True):
    data: list[_Row]
    event: None = None


_OTHERS = results(ignored("channel", _OTHER_CHANNELS, absent=["event"]), OTHER)
_DECODE = decoder(_Trades, *_OTHERS)
#: trade frames only (a block): no union to resolve
_DECODE_TRADES = decoder(_Trades)


class Poloniex(ExchangeProtocol):
    name = "poloniex"
    ws_url = "wss://ws.poloniex.com/ws/public"
    rest_url = "https://api.poloniex.com"
    ws_path = "/ws/public"
    max_candles = 500
    client_heartbeat_s = 20.0
    rest_min_interval_s = 0.2
    symbols = SymbolFormat("_")
    trade_marker = '"channel":"trades"'
    bundles_trades = True
    candle_columns = CandleColumns(time=12, low=0, high=1, open=2, close=3, volume=5, count=8, time_unit="ms")

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        return [orjson.dumps({"event": "subscribe", "channel": ["trades"], "symbols": [n]}).decode() for n in natives]

    def client_heartbeat(self) -> str | None:
        return '{"event":"ping"}'

    def fast_scan(self, text: str) -> tuple[ParseResult, list[HotRow]] | None:
        msg = _DECODE(text)
        if type(msg) is not _Trades:
            return _OTHERS[type(msg)]
        data = msg.data
        if not data or len(data) > self.max_trades:
            return None
        out: list[HotRow] = []
        for d in data:
            t = us_from_ms(d.createTime)
            p = d.price
            q = d.quantity
            pf = hot_numbers(p, q)
            if t is None or pf is None or d.takerSide not in _SIDES or not trade_id_ok(d.id):
                return None
            out.append((d.symbol, d.id, t, p, pf, q, d.takerSide))
        return TRADES, out

    def fast_block(self, texts: Sequence[str]) -> Block | None:
        rows, starts = self.block_rows(m.data for m in map(_DECODE_TRADES, texts))  # any other frame raises
        ps = [d.price for d in rows]
        qs = [d.quantity for d in rows]
        keys = hot_columns(ps, qs)
        if keys is None or not {d.takerSide for d in rows} <= _SIDES:
            return None
        ms = [d.createTime for d in rows]
        ids = [d.id for d in rows]
        if not int_column(ms, MILLIS) or not trade_ids_ok(ids):
            return None
        return Block([d.symbol for d in rows], ids, ms, MILLIS, ps, keys, qs, starts)

    def scan(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return BAD_JSON, NO_ROWS
        if type(msg) is not dict:
            return malformed("not_an_object"), NO_ROWS
        channel = msg.get("channel")
        event = msg.get("event")
        if channel == "trades" and event is None:
            out: list[Row] = []
            for d in self.rows(msg["data"]):
                side = d["takerSide"]
                if side != "buy" and side != "sell":
                    raise BadMessage("bad_side")
                tid = d.get("id")
                if not trade_id_ok(tid):
                    raise BadMessage("bad_trade_id")
                native = d["symbol"]
                if type(native) is not str:
                    raise BadMessage("bad_symbol")
                t = us_from_ms(d["createTime"])
                if t is None:
                    raise BadMessage("bad_time")
                p = price_text(d["price"])
                if p is None:
                    raise BadMessage("bad_price")
                q = trade_size_text(d["quantity"])
                if q is None:
                    raise BadMessage("bad_size")
                out.append((native, tid, t, p, q, side))
            return TRADES, out
        if event == "subscribe" or event == "unsubscribe":
            return ACK, NO_ROWS
        if event == "pong":
            return HEARTBEAT, NO_ROWS
        if event == "error":  # a refusal of the oldest subscription outstanding, if any
            return refused(str(msg.get("message"))), NO_ROWS
        if channel in _OTHER_CHANNELS:
            return OTHER, NO_ROWS
        return malformed("unexpected_type"), NO_ROWS

    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        return (
            f"/markets/{native}/candles?interval={interval_name(interval_s, _INTERVALS)}"
            f"&startTime={start * US_PER_MS}&endTime={end * US_PER_MS - 1}&limit={self.max_candles}"
        )

    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        return self.candle_columns.candles(loads(text))

    # simulator side -----------------------------------------------------------------------------
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        if msg.get("event") == "subscribe" and "trades" in (msg.get("channel") or ()):
            return ClientRequest("subscribe", tuple(msg.get("symbols") or ()))
        if msg.get("event") == "ping":
            return ClientRequest("heartbeat")
        return None

    def render_ack(self, request: ClientRequest) -> list[str]:
        return [orjson.dumps({"event": "subscribe", "channel": "trades", "symbols": list(request.natives)}).decode()]

    def render_subscribe(
        self, request: ClientRequest, unlisted: Sequence[str], state: SimState
    ) -> tuple[list[str], tuple[str, ...]]:
        if any(n in unlisted for n in request.natives):  # the request fails, naming nothing
            return [orjson.dumps({"event": "error", "message": "Subscription failed"}).decode()], ()
        return self.render_ack(request), request.natives

    def render_trade(self, trade: Trade, state: SimState) -> str:
        return self.render_trades([trade], state)

    def render_trades(self, trades: Sequence[Trade], state: SimState) -> str:
        data = [
            {
                "symbol": t.native_symbol,
                "amount": number_text(t.size * t.price),
                "quantity": number_text(t.size),
                "takerSide": t.side,
                "createTime": t.time_us // US_PER_MS,
                "price": number_text(t.price),
                "id": str(t.trade_id),
                "ts": t.time_us // US_PER_MS,
            }
            for t in trades
        ]
        return orjson.dumps({"channel": "trades", "data": data}).decode()

    def render_heartbeat_reply(self, request: ClientRequest, state: SimState) -> list[str]:
        return ['{"event":"pong"}']

    def render_malformed(self) -> str:
        return '{"channel":"trades","data":[{"symbol":"BTC_USDT","price":"1e99999","quantity":"1"}]}'

    def candle_query(self, path: str, query: dict[str, str]) -> CandleQuery | None:
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "markets" or parts[2] != "candles":
            return None
        interval_s = _INTERVAL_S[query.get("interval", "MINUTE_1")]
        start = int(query["startTime"]) // 1000 if "startTime" in query else None
        end = int(query["endTime"]) // 1000 + 1 if "endTime" in query else None
        return CandleQuery(parts[1], interval_s, start, end, min(int(query.get("limit", "100")), self.max_candles))

    def render_candles(self, candles: Sequence[Candle], query: CandleQuery) -> str:
        rows = []
        for c in candles:
            t = c.open_time * 1000
            rows.append(
                [
                    number_text(c.low),
                    number_text(c.high),
                    number_text(c.open),
                    number_text(c.close),
                    number_text(c.volume * c.close),
                    number_text(c.volume),
                    "0",
                    "0",
                    c.trade_count or 0,
                    t,
                    number_text(c.close),
                    _INTERVALS.get(query.interval_s, "MINUTE_1"),
                    t,
                    t + query.interval_s * 1000 - 1,
                ]
            )
        return orjson.dumps(rows).decode()


PROTOCOL = Poloniex()
