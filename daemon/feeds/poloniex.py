"""Poloniex v3 public websocket: `trades` channel, `/markets/{symbol}/candles`.

`quantity` is the base size (what bars count as volume) and `amount` the quote notional.
The client must send `{"event": "ping"}` at least every 30 s or the server disconnects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from daemon.feeds.base import (
    ACK,
    HEARTBEAT,
    OTHER,
    BadMessage,
    Candle,
    CandleQuery,
    ClientRequest,
    ExchangeProtocol,
    ParseResult,
    SimState,
    Trade,
    error,
    interval_name,
    loads,
    malformed,
    ms_to_us,
    number_text,
    price,
    size,
    split_normal,
    split_separated,
)

_INTERVALS = {60: "MINUTE_1", 300: "MINUTE_5", 900: "MINUTE_15", 3600: "HOUR_1"}
_INTERVAL_S = {v: k for k, v in _INTERVALS.items()}
_OTHER_CHANNELS = frozenset({"book", "book_lv2", "ticker", "candles_minute_1", "candles_minute_5", "auth"})


class Poloniex(ExchangeProtocol):
    name = "poloniex"
    ws_url = "wss://ws.poloniex.com/ws/public"
    rest_url = "https://api.poloniex.com"
    ws_path = "/ws/public"
    max_candles = 500
    client_heartbeat_s = 20.0
    rest_min_interval_s = 0.2

    def native_symbol(self, symbol: str) -> str:
        base, q = split_normal(symbol)
        return f"{base}_{q}"

    def normal_symbol(self, native: str) -> str:
        base, q = split_separated(native, "_")
        return f"{base}-{q}"

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        return [orjson.dumps({"event": "subscribe", "channel": ["trades"], "symbols": list(natives)}).decode()]

    def client_heartbeat(self) -> str | None:
        return '{"event":"ping"}'

    def parse_message(self, text: str | bytes) -> ParseResult:
        msg = loads(text)
        if not isinstance(msg, dict):
            return malformed("not_an_object")
        channel = msg.get("channel")
        event = msg.get("event")
        if channel == "trades" and event is None:
            data = msg["data"]
            if not isinstance(data, list):
                raise BadMessage("bad_data")
            trades = []
            for d in data:
                side = d["takerSide"]
                if side not in ("buy", "sell"):
                    raise BadMessage("bad_side")
                tid = d.get("id")
                if isinstance(tid, bool) or not isinstance(tid, int | str):
                    raise BadMessage("bad_trade_id")
                native = d["symbol"]
                trades.append(
                    Trade(
                        self.name,
                        self.normal_symbol(native),
                        native,
                        str(tid),
                        ms_to_us(d["createTime"]),
                        price(d["price"]),
                        size(d["quantity"]),
                        side,
                    )
                )
            return ParseResult("trade", tuple(trades))
        if event == "subscribe" or event == "unsubscribe":
            return ACK
        if event == "pong":
            return HEARTBEAT
        if event == "error":
            return error(f"exchange_error:{str(msg.get('message'))[:60]}")
        if channel in _OTHER_CHANNELS:
            return OTHER
        return malformed("unexpected_type")

    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        return (
            f"/markets/{native}/candles?interval={interval_name(interval_s, _INTERVALS)}"
            f"&startTime={start * 1000}&endTime={end * 1000 - 1}&limit={self.max_candles}"
        )

    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        rows = loads(text)
        if not isinstance(rows, list):
            raise BadMessage("candles_not_a_list")
        out = []
        for r in rows:
            if not isinstance(r, list) or len(r) < 13 or not isinstance(r[12], int):
                raise BadMessage("bad_candle")
            count = r[8] if isinstance(r[8], int) and not isinstance(r[8], bool) else None
            out.append(Candle(r[12] // 1000, price(r[2]), price(r[1]), price(r[0]), price(r[3]), size(r[5]), count))
        out.sort(key=lambda c: c.open_time)
        return out

    # simulator side -----------------------------------------------------------------------------
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        if msg.get("event") == "subscribe" and "trades" in (msg.get("channel") or ()):
            return ClientRequest("subscribe", tuple(msg.get("symbols") or ()))
        if msg.get("event") == "ping":
            return ClientRequest("heartbeat")
        return None

    def render_ack(self, request: ClientRequest) -> list[str]:
        return [orjson.dumps({"event": "subscribe", "channel": "trades", "symbols": list(request.natives)}).decode()]

    def render_trade(self, trade: Trade, state: SimState) -> str:
        ms = trade.time_us // 1000
        d = {
            "symbol": trade.native_symbol,
            "amount": number_text(trade.size * trade.price),
            "quantity": number_text(trade.size),
            "takerSide": trade.side,
            "createTime": ms,
            "price": number_text(trade.price),
            "id": str(trade.trade_id),
            "ts": ms,
        }
        return orjson.dumps({"channel": "trades", "data": [d]}).decode()

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
