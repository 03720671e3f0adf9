"""Coinbase Exchange: `matches` + `heartbeat` channels, `/products/{id}/candles`.

A subscribe naming a product Coinbase does not list is refused as a whole, nothing of it
subscribed: `{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is not a valid
product"}` (the reason names the product; older feeds said "Invalid product ID provided").

Trades are `match` (and `last_match`, the one replayed on subscribe; duplicate ids are dropped by
the aggregator). `side` is the maker's side, so the taker side is the opposite. Prices and sizes
are strings on the websocket; REST candles are JSON numbers, read as Decimals from their text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

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
    error,
    iso_to_us,
    iso_us,
    loads_exact,
    malformed,
    number_text,
    refused,
)
from daemon.feeds.fields import (
    ISO,
    US_PER_S,
    hot_columns,
    hot_numbers,
    iso_column,
    price_text,
    seconds,
    trade_id_ok,
    trade_ids_ok,
    trade_size_text,
    us_from_iso,
)
from daemon.feeds.schema import decoder, ignored, results

_OTHER_TYPES = frozenset(
    {
        "l2update",
        "snapshot",
        "ticker",
        "status",
        "received",
        "open",
        "done",
        "change",
        "activate",
        "l2update_batch",
        "level2",
        "full",
        "auction",
        "rfq_match",
    }
)
#: The reason Coinbase gives for a product it does not list: "FOO-USD is not a valid product".
_INVALID_PRODUCT = re.compile(r"\s*(\S+) is not a valid product")
_GRANULARITIES = frozenset({60, 300, 900, 3600, 21600, 86400})
_TAKER = {"sell": "buy", "buy": "sell"}  # maker side -> taker side


# --- the fast path's schema (see schema.py): trades in full, the rest by their type alone
class _Match(msgspec.Struct, tag_field="type", tag="match", forbid_unknown_fields=True, kw_only=True):
    trade_id: int | str
    side: str
    size: str
    price: str
    product_id: str
    time: str
    maker_order_id: str | None = None
    taker_order_id: str | None = None
    sequence: int | None = None


class _LastMatch(_Match, tag="last_match"):
    pass


class _Heartbeat(msgspec.Struct, tag_field="type", tag="heartbeat", forbid_unknown_fields=True, kw_only=True):
    time: str | None = None
    sequence: int | None = None
    last_trade_id: int | None = None
    product_id: str | None = None


_OTHERS = ignored("type", _OTHER_TYPES)
_ACKS = ignored("type", ["subscriptions"])
_RESULTS = {**results(_OTHERS, OTHER), **results(_ACKS, ACK)}
_DECODE = decoder(_Match, _LastMatch, _Heartbeat, *_OTHERS, *_ACKS)
#: trade frames only (a block): no union to resolve
_DECODE_MATCH = decoder(_Match, _LastMatch)


class Coinbase(ExchangeProtocol):
    name = "coinbase"
    ws_url = "wss://ws-feed.exchange.coinbase.com"
    rest_url = "https://api.exchange.coinbase.com"
    ws_path = "/"
    max_candles = 300
    server_heartbeat_s = 1.0
    rest_min_interval_s = 0.34  # public endpoints: 3 requests/s
    symbols = SymbolFormat("-")
    trade_marker = '"type":"match"'
    candle_columns = CandleColumns(time=0, low=1, high=2, open=3, close=4, volume=5)
    refusal_drops_request = True

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        doc = {"type": "subscribe", "product_ids": list(natives), "channels": ["matches", "heartbeat"]}
        return [orjson.dumps(doc).decode()]

    def fast_scan(self, text: str) -> tuple[ParseResult, list[HotRow]] | None:
        msg = _DECODE(text)
        kind = type(msg)
        if kind is _Match or kind is _LastMatch:
            side = _TAKER.get(msg.side)
            t = us_from_iso(msg.time)
            p = msg.price
            q = msg.size
            pf = hot_numbers(p, q)
            tid = msg.trade_id
            if side is None or t is None or pf is None or not trade_id_ok(tid):
                return None
            return TRADES, [(msg.product_id, tid, t, p, pf, q, side)]
        if kind is _Heartbeat:
            if msg.time is None:
                return HEARTBEAT, NO_ROWS
            t = us_from_iso(msg.time)
            return None if t is None else (ParseResult("heartbeat", time_us=t), NO_ROWS)
        return _RESULTS.get(kind)

    def fast_block(self, texts: Sequence[str]) -> Block | None:
        msgs = list(map(_DECODE_MATCH, texts))  # any other frame raises
        ps = [m.price for m in msgs]
        qs = [m.size for m in msgs]
        keys = hot_columns(ps, qs)
        if keys is None or not {m.side for m in msgs} <= _TAKER.keys():
            return None
        ts = [m.time for m in msgs]
        ids = [m.trade_id for m in msgs]
        if not iso_column(ts) or not trade_ids_ok(ids):
            return None
        return Block([m.product_id for m in msgs], ids, ts, ISO, ps, keys, qs)

    def scan(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return BAD_JSON, NO_ROWS
        if type(msg) is not dict:
            return malformed("not_an_object"), NO_ROWS
        kind = msg.get("type")
        if kind == "match" or kind == "last_match":
            maker = msg["side"]
            if maker == "sell":
                side = "buy"
            elif maker == "buy":
                side = "sell"
            else:
                raise BadMessage("bad_side")
            tid = msg.get("trade_id")
            if not trade_id_ok(tid):
                raise BadMessage("bad_trade_id")
            native = msg["product_id"]
            if type(native) is not str:
                raise BadMessage("bad_symbol")
            t = us_from_iso(msg["time"])
            if t is None:
                raise BadMessage("bad_time")
            p = price_text(msg["price"])
            if p is None:
                raise BadMessage("bad_price")
            q = trade_size_text(msg["size"])
            if q is None:
                raise BadMessage("bad_size")
            return TRADES, [(native, tid, t, p, q, side)]
        if kind == "heartbeat":
            t = msg.get("time")
            return (ParseResult("heartbeat", time_us=iso_to_us(t)) if t is not None else HEARTBEAT), NO_ROWS
        if kind == "subscriptions":
            return ACK, NO_ROWS
        if kind == "error":
            if msg.get("message") == "Failed to subscribe":
                reason = str(msg.get("reason"))
                named = _INVALID_PRODUCT.match(reason)
                return refused(f"Failed to subscribe: {reason}", (named[1],) if named else ()), NO_ROWS
            return error(f"exchange_error:{str(msg.get('message'))[:60]}"), NO_ROWS
        if kind in _OTHER_TYPES:
            return OTHER, NO_ROWS
        return malformed("unexpected_type"), NO_ROWS

    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        if interval_s not in _GRANULARITIES:
            raise ValueError(f"coinbase has no {interval_s}s candles")
        return (
            f"/products/{quote(native)}/candles?granularity={interval_s}"
            f"&start={iso_us(start * US_PER_S)}&end={iso_us(end * US_PER_S)}"
        )

    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        return self.candle_columns.candles(loads_exact(text))

    # simulator side -----------------------------------------------------------------------------
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        if msg.get("type") == "subscribe" and isinstance(msg.get("product_ids"), list):
            channels = msg.get("channels") or []
            return ClientRequest("subscribe", tuple(msg["product_ids"]), raw={"channels": channels})
        return None

    def render_ack(self, request: ClientRequest) -> list[str]:
        channels = [c if isinstance(c, str) else c.get("name") for c in (request.raw or {}).get("channels", [])]
        doc = {
            "type": "subscriptions",
            "channels": [{"name": c, "product_ids": list(request.natives)} for c in channels],
        }
        return [orjson.dumps(doc).decode()]

    def render_subscribe(
        self, request: ClientRequest, unlisted: Sequence[str], state: SimState
    ) -> tuple[list[str], tuple[str, ...]]:
        bad = [n for n in request.natives if n in unlisted]
        if not bad:
            return self.render_ack(request), request.natives
        doc = {"type": "error", "message": "Failed to subscribe", "reason": f"{bad[0]} is not a valid product"}
        return [orjson.dumps(doc).decode()], ()  # the whole request is ignored

    def rest_refusal(self, status: int, body: bytes) -> str | None:
        return f"HTTP 404 {body[:100].decode('utf-8', 'replace')}" if status == 404 else None

    def render_trade(self, trade: Trade, state: SimState) -> str:
        maker = "sell" if trade.side == "buy" else "buy"
        doc = {
            "type": "match",
            "trade_id": int(trade.trade_id or 0),
            "maker_order_id": "sim-maker",
            "taker_order_id": "sim-taker",
            "side": maker,
            "size": number_text(trade.size),
            "price": number_text(trade.price),
            "product_id": trade.native_symbol,
            "sequence": state.sequence,
            "time": iso_us(trade.time_us),
        }
        return orjson.dumps(doc).decode()

    def render_server_heartbeat(self, natives: Sequence[str], state: SimState) -> list[str]:
        return [
            orjson.dumps(
                {
                    "type": "heartbeat",
                    "sequence": state.sequence,
                    "last_trade_id": state.last_trade_id,
                    "product_id": n,
                    "time": iso_us(state.now_us),
                }
            ).decode()
            for n in natives
        ]

    def candle_query(self, path: str, query: dict[str, str]) -> CandleQuery | None:
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "candles":
            return None
        start = seconds(iso_to_us(query["start"])) if "start" in query else None
        end = seconds(iso_to_us(query["end"])) if "end" in query else None
        return CandleQuery(parts[1], int(query.get("granularity", "60")), start, end, self.max_candles)

    def render_candles(self, candles: Sequence[Candle], query: CandleQuery) -> str:
        rows = ",".join(
            f"[{c.open_time},{number_text(c.low)},{number_text(c.high)},{number_text(c.open)},"
            f"{number_text(c.close)},{number_text(c.volume)}]"
            for c in sorted(candles, key=lambda c: -c.open_time)
        )
        return f"[{rows}]"


PROTOCOL = Coinbase()
