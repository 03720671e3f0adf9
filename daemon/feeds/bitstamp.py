"""Bitstamp: `live_trades_<pair>` channels, `/api/v2/ohlc/{pair}/`.

Trade prices and amounts come twice, as JSON numbers and as `price_str`/`amount_str`; only the
strings are used. `type` 0 is a buy (taker bought), 1 a sell. `microtimestamp` gives µs. The
client sends `bts:heartbeat` itself; `bts:request_reconnect` asks for a reconnect.
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
    check_us,
    error,
    loads,
    malformed,
    number_text,
    price,
    size,
    split_concat,
    split_normal,
)

_PREFIX = "live_trades_"


class Bitstamp(ExchangeProtocol):
    name = "bitstamp"
    ws_url = "wss://ws.bitstamp.net"
    rest_url = "https://www.bitstamp.net"
    ws_path = "/"
    max_candles = 1000
    client_heartbeat_s = 10.0
    rest_min_interval_s = 0.2

    def native_symbol(self, symbol: str) -> str:
        base, q = split_normal(symbol)
        return f"{base}{q}".lower()

    def normal_symbol(self, native: str) -> str:
        if not isinstance(native, str):
            raise BadMessage("bad_symbol")
        base, q = split_concat(native)
        return f"{base}-{q}"

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        return [
            orjson.dumps({"event": "bts:subscribe", "data": {"channel": f"{_PREFIX}{n}"}}).decode() for n in natives
        ]

    def client_heartbeat(self) -> str | None:
        return '{"event":"bts:heartbeat"}'

    def expected_acks(self, natives: Sequence[str]) -> int:
        return len(natives)  # one acknowledgement per symbol

    def parse_message(self, text: str | bytes) -> ParseResult:
        msg = loads(text)
        if not isinstance(msg, dict):
            return malformed("not_an_object")
        event = msg.get("event")
        if event == "trade":
            channel = msg["channel"]
            if not isinstance(channel, str) or not channel.startswith(_PREFIX):
                raise BadMessage("bad_channel")
            native = channel[len(_PREFIX) :]
            d = msg["data"]
            kind = d["type"]
            if kind not in (0, 1):
                raise BadMessage("bad_side")
            micro = d.get("microtimestamp")
            if isinstance(micro, str) and micro.isdigit() and len(micro) < 20:
                t_us = check_us(int(micro))
            else:
                ts = d["timestamp"]
                if not isinstance(ts, str) or not ts.isdigit() or len(ts) > 12:
                    raise BadMessage("bad_time")
                t_us = check_us(int(ts) * 1_000_000)
            tid = d.get("id")
            if isinstance(tid, bool) or not isinstance(tid, int | str):
                raise BadMessage("bad_trade_id")
            trade = Trade(
                self.name,
                self.normal_symbol(native),
                native,
                str(tid),
                t_us,
                price(d["price_str"]),
                size(d["amount_str"]),
                "buy" if kind == 0 else "sell",
            )
            return ParseResult("trade", (trade,))
        if event == "bts:heartbeat":
            return HEARTBEAT
        if event == "bts:subscription_succeeded" or event == "bts:unsubscription_succeeded":
            return ACK
        if event == "bts:request_reconnect":
            return ParseResult("other", reason="request_reconnect", reconnect=True)
        if event == "bts:error":
            return error(f"exchange_error:{str((msg.get('data') or {}).get('message'))[:60]}")
        if event in ("data", "order_created", "order_changed", "order_deleted"):
            return OTHER
        return malformed("unexpected_type")

    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        n = max(1, min(self.max_candles, (end - start) // interval_s))
        return f"/api/v2/ohlc/{native}/?step={interval_s}&limit={n}&start={start}&end={end - interval_s}"

    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        doc = loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            raise BadMessage("candles_not_an_object")
        rows = doc["data"].get("ohlc")
        if not isinstance(rows, list):
            raise BadMessage("candles_not_a_list")
        out = []
        for r in rows:
            ts = r.get("timestamp") if isinstance(r, dict) else None
            if isinstance(ts, str) and ts.isdigit():
                ts = int(ts)
            if not isinstance(ts, int) or isinstance(ts, bool):
                raise BadMessage("bad_candle")
            out.append(
                Candle(
                    ts,
                    price(r["open"]),
                    price(r["high"]),
                    price(r["low"]),
                    price(r["close"]),
                    size(r["volume"]),
                )
            )
        out.sort(key=lambda c: c.open_time)
        return out

    # simulator side -----------------------------------------------------------------------------
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        if msg.get("event") == "bts:subscribe":
            channel = (msg.get("data") or {}).get("channel", "")
            if isinstance(channel, str) and channel.startswith(_PREFIX):
                return ClientRequest("subscribe", (channel[len(_PREFIX) :],))
        if msg.get("event") == "bts:heartbeat":
            return ClientRequest("heartbeat")
        return None

    def render_ack(self, request: ClientRequest) -> list[str]:
        return [
            orjson.dumps({"event": "bts:subscription_succeeded", "channel": f"{_PREFIX}{n}", "data": {}}).decode()
            for n in request.natives
        ]

    def render_trade(self, trade: Trade, state: SimState) -> str:
        p, a = number_text(trade.price), number_text(trade.size)
        doc = {
            "data": {
                "id": int(trade.trade_id or 0),
                "timestamp": str(trade.time_us // 1_000_000),
                "amount": float(trade.size),
                "amount_str": a,
                "price": float(trade.price),
                "price_str": p,
                "type": 0 if trade.side == "buy" else 1,
                "microtimestamp": str(trade.time_us),
                "buy_order_id": 1,
                "sell_order_id": 2,
            },
            "channel": f"{_PREFIX}{trade.native_symbol}",
            "event": "trade",
        }
        return orjson.dumps(doc).decode()

    def render_heartbeat_reply(self, request: ClientRequest, state: SimState) -> list[str]:
        return ['{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}']

    def render_malformed(self) -> str:
        return '{"event":"trade","channel":"live_trades_btcusd","data":{"type":7}}'

    def candle_query(self, path: str, query: dict[str, str]) -> CandleQuery | None:
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:3] != ["api", "v2", "ohlc"]:
            return None
        step = int(query.get("step", "60"))
        limit = min(int(query.get("limit", "1000")), self.max_candles)
        start = int(query["start"]) if "start" in query else None
        end = int(query["end"]) + step if "end" in query else None
        return CandleQuery(parts[3], step, start, end, limit)

    def render_candles(self, candles: Sequence[Candle], query: CandleQuery) -> str:
        ohlc = [
            {
                "timestamp": str(c.open_time),
                "open": number_text(c.open),
                "high": number_text(c.high),
                "low": number_text(c.low),
                "close": number_text(c.close),
                "volume": number_text(c.volume),
            }
            for c in candles
        ]
        return orjson.dumps({"data": {"pair": query.native_symbol.upper(), "ohlc": ohlc}}).decode()


PROTOCOL = Bitstamp()
