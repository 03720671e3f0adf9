"""Binance spot: `<symbol>@trade` streams (and `@aggTrade`), `/api/v3/klines`.

`m: true` means the buyer was the maker, so the taker sold. Combined-stream messages come wrapped
in `{"stream": …, "data": …}`; raw `/ws` messages come bare. Binance has no application heartbeat:
the server's websocket pings (answered by the websockets library) are the keep-alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from daemon.feeds.base import (
    ACK,
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
    split_concat,
    split_normal,
)

_INTERVALS = {60: "1m", 300: "5m", 900: "15m", 3600: "1h"}
_INTERVAL_S = {v: k for k, v in _INTERVALS.items()}
_OTHER_EVENTS = frozenset(
    {"depthUpdate", "kline", "24hrTicker", "24hrMiniTicker", "avgPrice", "1hTicker", "4hTicker", "1dTicker"}
)


class Binance(ExchangeProtocol):
    name = "binance"
    ws_url = "wss://stream.binance.com:9443/ws"
    rest_url = "https://api.binance.com"
    ws_path = "/ws"
    max_candles = 1000
    rest_min_interval_s = 0.1

    def native_symbol(self, symbol: str) -> str:
        base, q = split_normal(symbol)
        return f"{base}{q}"

    def normal_symbol(self, native: str) -> str:
        if not isinstance(native, str):
            raise BadMessage("bad_symbol")
        base, q = split_concat(native)
        return f"{base}-{q}"

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        params = [f"{n.lower()}@trade" for n in natives]
        return [orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": 1}).decode()]

    def parse_message(self, text: str | bytes) -> ParseResult:
        msg = loads(text)
        if not isinstance(msg, dict):
            return malformed("not_an_object")
        if "stream" in msg and "data" in msg:
            msg = msg["data"]
            if not isinstance(msg, dict):
                return malformed("not_an_object")
        event = msg.get("e")
        if event == "trade" or event == "aggTrade":
            tid = msg["t"] if event == "trade" else msg["a"]
            if isinstance(tid, bool) or not isinstance(tid, int):
                raise BadMessage("bad_trade_id")
            maker_buyer = msg["m"]
            if not isinstance(maker_buyer, bool):
                raise BadMessage("bad_side")
            native = msg["s"]
            trade = Trade(
                self.name,
                self.normal_symbol(native),
                native,
                str(tid),
                ms_to_us(msg["T"]),
                price(msg["p"]),
                size(msg["q"]),
                "sell" if maker_buyer else "buy",
            )
            return ParseResult("trade", (trade,))
        if event in _OTHER_EVENTS:
            return OTHER
        if event is None:
            if "result" in msg and "id" in msg:
                return ACK
            if ("code" in msg and "msg" in msg) or "error" in msg:
                return error(f"exchange_error:{str(msg.get('msg') or msg.get('error'))[:60]}")
            if "u" in msg and "b" in msg and "a" in msg:  # bookTicker has no event type
                return OTHER
        return malformed("unexpected_type")

    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        return (
            f"/api/v3/klines?symbol={native}&interval={interval_name(interval_s, _INTERVALS)}"
            f"&startTime={start * 1000}&endTime={end * 1000 - 1}&limit={self.max_candles}"
        )

    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        rows = loads(text)
        if not isinstance(rows, list):
            raise BadMessage("candles_not_a_list")
        out = []
        for r in rows:
            if not isinstance(r, list) or len(r) < 9 or not isinstance(r[0], int):
                raise BadMessage("bad_candle")
            count = r[8] if isinstance(r[8], int) and not isinstance(r[8], bool) else None
            out.append(Candle(r[0] // 1000, price(r[1]), price(r[2]), price(r[3]), price(r[4]), size(r[5]), count))
        out.sort(key=lambda c: c.open_time)
        return out

    # simulator side -----------------------------------------------------------------------------
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        if msg.get("method") == "SUBSCRIBE" and isinstance(msg.get("params"), list):
            natives = tuple(p.split("@")[0].upper() for p in msg["params"] if isinstance(p, str))
            return ClientRequest("subscribe", natives, request_id=msg.get("id"))
        return None

    def render_ack(self, request: ClientRequest) -> list[str]:
        return [orjson.dumps({"result": None, "id": request.request_id}).decode()]

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
