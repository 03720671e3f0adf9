"""Bitstamp: `live_trades_<pair>` channels, `/api/v2/ohlc/{pair}/`.

Trade prices and amounts come twice, as JSON numbers and as `price_str`/`amount_str`; only the
strings are used. `type` 0 is a buy (taker bought), 1 a sell. `microtimestamp` gives µs. The
client sends `bts:heartbeat` itself; `bts:request_reconnect` asks for a reconnect.

Bitstamp acknowledges a subscription to a pair it does not list (`bts:subscription_succeeded`)
and then sends nothing for it; REST says so (`/api/v2/ohlc/{pair}/`: HTTP 404). A `bts:error`
(`{"event":"bts:error","channel":"","data":{"code":null,"message":"..."}}`) names no channel.
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
    CandleQuery,
    ClientRequest,
    ExchangeProtocol,
    HotRow,
    ParseResult,
    Row,
    SimState,
    SymbolFormat,
    Trade,
    loads,
    malformed,
    number_text,
    price,
    refused,
    size,
)
from daemon.feeds.fields import (
    digit_keys,
    hot_columns,
    hot_numbers,
    integer,
    price_text,
    seconds,
    trade_id_ok,
    trade_ids_ok,
    trade_size_text,
    us,
    us_from_us,
)
from daemon.feeds.schema import decoder, ignored, results

_PREFIX = "live_trades_"
_SIDE = ("buy", "sell")  # by `type`
_TYPES = frozenset({0, 1})


# --- the fast path's schema (see schema.py): trades in full, the rest by event
class _Data(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: int | str
    amount_str: str
    price_str: str
    type: int
    microtimestamp: str | int
    timestamp: str | int | None = None
    amount: float | None = None
    price: float | None = None
    buy_order_id: int | None = None
    sell_order_id: int | None = None


class _Trade(msgspec.Struct, tag_field="event", tag="trade", forbid_unknown_fields=True):
    channel: str
    data: _Data


_RESULTS = {
    **results(ignored("event", ["bts:heartbeat"]), HEARTBEAT),
    **results(ignored("event", ["bts:subscription_succeeded", "bts:unsubscription_succeeded"]), ACK),
    **results(ignored("event", ["data", "order_created", "order_changed", "order_deleted"]), OTHER),
}
_DECODE = decoder(_Trade, *_RESULTS)
#: trade frames only (a block): no union to resolve by a tag that comes last
_DECODE_TRADE = decoder(_Trade)


class Bitstamp(ExchangeProtocol):
    name = "bitstamp"
    ws_url = "wss://ws.bitstamp.net"
    rest_url = "https://www.bitstamp.net"
    ws_path = "/"
    max_candles = 1000
    client_heartbeat_s = 10.0
    rest_min_interval_s = 0.2
    symbols = SymbolFormat("", case="lower")
    trade_marker = '"event":"trade"'

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        return [
            orjson.dumps({"event": "bts:subscribe", "data": {"channel": f"{_PREFIX}{n}"}}).decode() for n in natives
        ]

    def client_heartbeat(self) -> str | None:
        return '{"event":"bts:heartbeat"}'

    def expected_acks(self, natives: Sequence[str]) -> int:
        return len(natives)  # one acknowledgement per symbol

    def fast_scan(self, text: str) -> tuple[ParseResult, list[HotRow]] | None:
        msg = _DECODE(text)
        if type(msg) is not _Trade:
            return _RESULTS[type(msg)]
        channel, d = msg.channel, msg.data
        t = us_from_us(d.microtimestamp)
        p = d.price_str
        q = d.amount_str
        pf = hot_numbers(p, q)
        side = d.type
        if t is None or pf is None or not 0 <= side <= 1 or not trade_id_ok(d.id):
            return None
        if not channel.startswith(_PREFIX):
            return None
        return TRADES, [(channel[len(_PREFIX) :], d.id, t, p, pf, q, _SIDE[side])]

    def fast_block(self, texts: Sequence[str]) -> Block | None:
        channels: list[str] = []
        rows = []
        for m in map(_DECODE_TRADE, texts):  # any other frame raises
            channels.append(m.channel)  # each frame dropped once read (see `block_rows`)
            rows.append(m.data)
        ps = [d.price_str for d in rows]
        qs = [d.amount_str for d in rows]
        keys = hot_columns(ps, qs)
        if keys is None or not {d.type for d in rows} <= _TYPES:
            return None
        ts = [d.microtimestamp for d in rows]
        clock = digit_keys(ts, 1)
        ids = [d.id for d in rows]
        if clock is None or not trade_ids_ok(ids):
            return None
        natives = {c: c[len(_PREFIX) :] for c in set(channels) if c.startswith(_PREFIX)}
        return Block(list(map(natives.__getitem__, channels)), ids, ts, clock, ps, keys, qs)

    def scan(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return BAD_JSON, NO_ROWS
        if type(msg) is not dict:
            return malformed("not_an_object"), NO_ROWS
        event = msg.get("event")
        if event == "trade":
            channel = msg["channel"]
            if type(channel) is not str or not channel.startswith(_PREFIX):
                raise BadMessage("bad_channel")
            d = msg["data"]
            kind = d["type"]
            if kind == 0 and type(kind) is int:
                side = "buy"
            elif kind == 1 and type(kind) is int:
                side = "sell"
            else:
                raise BadMessage("bad_side")
            # microtimestamp (µs text) when present, else the whole-seconds timestamp
            if "microtimestamp" in d:
                t = us_from_us(d["microtimestamp"])
            else:
                secs = integer(d["timestamp"], 10**12)
                t = None if secs is None else us_from_us(us(secs))
            if t is None:
                raise BadMessage("bad_time")
            tid = d.get("id")
            if not trade_id_ok(tid):
                raise BadMessage("bad_trade_id")
            p = price_text(d["price_str"])
            if p is None:
                raise BadMessage("bad_price")
            q = trade_size_text(d["amount_str"])
            if q is None:
                raise BadMessage("bad_size")
            return TRADES, [(channel[len(_PREFIX) :], tid, t, p, q, side)]
        if event == "bts:heartbeat":
            return HEARTBEAT, NO_ROWS
        if event == "bts:subscription_succeeded" or event == "bts:unsubscription_succeeded":
            return ACK, NO_ROWS
        if event == "bts:request_reconnect":
            return ParseResult("other", reason="request_reconnect", reconnect=True), NO_ROWS
        if event == "bts:error":  # a refusal of the oldest subscription outstanding, if any
            return refused(str((msg.get("data") or {}).get("message"))), NO_ROWS
        if event in ("data", "order_created", "order_changed", "order_deleted"):
            return OTHER, NO_ROWS
        return malformed("unexpected_type"), NO_ROWS

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

    def rest_refusal(self, status: int, body: bytes) -> str | None:
        return f"HTTP 404 {body[:100].decode('utf-8', 'replace')}" if status == 404 else None

    def render_rest_unknown(self, native: str) -> tuple[int, str]:
        return 404, '{"code":"404","message":"Not found"}'

    def render_trade(self, trade: Trade, state: SimState) -> str:
        p, a = number_text(trade.price), number_text(trade.size)
        doc = {
            "data": {
                "id": int(trade.trade_id or 0),
                "timestamp": str(seconds(trade.time_us)),
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
