"""Kraken: websocket v2 `trade` channel (v1 trade arrays parse too), `/0/public/OHLC`.

v2 sends prices and quantities as JSON *numbers*, so trade messages are parsed from their text
with `json.loads(parse_float=Decimal)`: the Decimal is built from the digits the exchange sent.
Everything else goes through orjson. v1 trade arrays carry strings and no trade id. Kraken calls
bitcoin XBT in v1 and REST; symbols are normalised to BTC.
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
    Side,
    SimState,
    Trade,
    error,
    interval_name,
    iso_to_us,
    iso_us,
    loads,
    loads_exact,
    malformed,
    number_text,
    price,
    seconds_text_to_us,
    size,
    split_normal,
    split_separated,
)

_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
_REST_ALIASES = {"BTC": "XBT", "DOGE": "XDG"}
_INTERVALS = {60: "1", 300: "5", 900: "15", 3600: "60"}
_OTHER_CHANNELS = frozenset({"status", "book", "ticker", "ohlc", "instrument", "level3"})
_V1_OTHER_EVENTS = frozenset({"systemStatus", "pong"})


def _side(v: Any) -> Side:
    if v in ("buy", "b"):
        return "buy"
    if v in ("sell", "s"):
        return "sell"
    raise BadMessage("bad_side")


class Kraken(ExchangeProtocol):
    name = "kraken"
    ws_url = "wss://ws.kraken.com/v2"
    rest_url = "https://api.kraken.com"
    ws_path = "/v2"
    max_candles = 720
    server_heartbeat_s = 1.0
    rest_min_interval_s = 1.0

    def native_symbol(self, symbol: str) -> str:
        base, q = split_normal(symbol)
        return f"{base}/{q}"

    def normal_symbol(self, native: str) -> str:
        base, q = split_separated(native, "/")
        return f"{_ALIASES.get(base, base)}-{_ALIASES.get(q, q)}"

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        doc = {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": list(natives), "snapshot": False},
        }
        return [orjson.dumps(doc).decode()]

    def expected_acks(self, natives: Sequence[str]) -> int:
        return len(natives)  # one acknowledgement per symbol

    def parse_message(self, text: str | bytes) -> ParseResult:
        head = text.lstrip()[:1]
        if head in ("[", b"["):
            return self._parse_v1_array(loads(text))
        msg = loads(text)
        if not isinstance(msg, dict):
            return malformed("not_an_object")
        channel = msg.get("channel")
        if channel == "trade":
            return self._parse_v2_trades(loads_exact(text))
        if channel == "heartbeat":
            return HEARTBEAT
        if channel in _OTHER_CHANNELS:
            return OTHER
        method = msg.get("method")
        if method in ("subscribe", "unsubscribe"):
            if msg.get("success") is True:
                return ACK
            return error(f"exchange_error:{str(msg.get('error'))[:60]}")
        if method == "pong":
            return HEARTBEAT
        event = msg.get("event")  # v1
        if event == "heartbeat":
            return HEARTBEAT
        if event == "subscriptionStatus":
            if msg.get("status") in ("subscribed", "unsubscribed"):
                return ACK
            return error(f"exchange_error:{str(msg.get('errorMessage'))[:60]}")
        if event in _V1_OTHER_EVENTS:
            return OTHER
        if event == "error" or "error" in msg:
            return error(f"exchange_error:{str(msg.get('errorMessage') or msg.get('error'))[:60]}")
        return malformed("unexpected_type")

    def _parse_v2_trades(self, msg: Any) -> ParseResult:
        data = msg["data"]
        if not isinstance(data, list):
            raise BadMessage("bad_data")
        trades = []
        for d in data:
            native = d["symbol"]
            tid = d.get("trade_id")
            if tid is not None and (isinstance(tid, bool) or not isinstance(tid, int | str)):
                raise BadMessage("bad_trade_id")
            trades.append(
                Trade(
                    self.name,
                    self.normal_symbol(native),
                    native,
                    None if tid is None else str(tid),
                    iso_to_us(d["timestamp"]),
                    price(d["price"]),
                    size(d["qty"]),
                    _side(d["side"]),
                )
            )  # type: ignore[arg-type]
        return ParseResult("trade", tuple(trades))

    def _parse_v1_array(self, msg: Any) -> ParseResult:
        if not isinstance(msg, list) or len(msg) < 4:
            raise BadMessage("bad_array")
        name, native = msg[-2], msg[-1]
        if name != "trade":
            if isinstance(name, str) and name.split("-")[0] in ("book", "ticker", "spread", "ohlc"):
                return OTHER
            raise BadMessage("unexpected_type")
        rows = msg[1]
        if not isinstance(rows, list):
            raise BadMessage("bad_data")
        symbol = self.normal_symbol(native)
        trades = tuple(
            Trade(
                self.name,
                symbol,
                native,
                None,
                seconds_text_to_us(r[2]),
                price(r[0]),
                size(r[1]),
                _side(r[3]),
            )  # type: ignore[arg-type]
            for r in rows
        )
        return ParseResult("trade", trades)

    # REST ---------------------------------------------------------------------------------------
    def rest_pair(self, native: str) -> str:
        base, q = native.upper().split("/")
        return f"{_REST_ALIASES.get(base, base)}{_REST_ALIASES.get(q, q)}"

    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        # Kraken pages by `since` only (exclusive) and returns at most the latest 720 candles.
        return (
            f"/0/public/OHLC?pair={self.rest_pair(native)}&interval={interval_name(interval_s, _INTERVALS)}"
            f"&since={start - 1}"
        )

    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        doc = loads(text)
        if not isinstance(doc, dict):
            raise BadMessage("candles_not_an_object")
        if doc.get("error"):
            raise BadMessage(f"exchange_error:{str(doc['error'])[:60]}")
        result = doc.get("result")
        if not isinstance(result, dict):
            raise BadMessage("candles_without_result")
        rows: list[Any] = next((v for k, v in result.items() if k != "last"), [])
        out = []
        for r in rows:
            if not isinstance(r, list) or len(r) < 8 or not isinstance(r[0], int):
                raise BadMessage("bad_candle")
            count = r[7] if isinstance(r[7], int) and not isinstance(r[7], bool) else None
            out.append(Candle(r[0], price(r[1]), price(r[2]), price(r[3]), price(r[4]), size(r[6]), count))
        out.sort(key=lambda c: c.open_time)
        return out

    # simulator side -----------------------------------------------------------------------------
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        params: dict[str, Any] = msg["params"] if isinstance(msg.get("params"), dict) else {}
        if msg.get("method") == "subscribe" and params.get("channel") == "trade":
            return ClientRequest("subscribe", tuple(params.get("symbol") or ()), request_id=msg.get("req_id"))
        if msg.get("method") == "ping":
            return ClientRequest("heartbeat", request_id=msg.get("req_id"))
        return None

    def render_ack(self, request: ClientRequest) -> list[str]:
        return [
            orjson.dumps(
                {
                    "method": "subscribe",
                    "result": {"channel": "trade", "snapshot": False, "symbol": n},
                    "success": True,
                }
            ).decode()
            for n in request.natives
        ]

    def render_trade(self, trade: Trade, state: SimState) -> str:
        # numbers as JSON numbers, exactly as Kraken v2 sends them
        return (
            f'{{"channel":"trade","type":"update","data":[{{"symbol":"{trade.native_symbol}",'
            f'"side":"{trade.side}","price":{number_text(trade.price)},"qty":{number_text(trade.size)},'
            f'"ord_type":"market","trade_id":{int(trade.trade_id or 0)},'
            f'"timestamp":"{iso_us(trade.time_us)}"}}]}}'
        )

    def render_server_heartbeat(self, natives: Sequence[str], state: SimState) -> list[str]:
        return ['{"channel":"heartbeat"}']

    def render_heartbeat_reply(self, request: ClientRequest, state: SimState) -> list[str]:
        return [orjson.dumps({"method": "pong", "req_id": request.request_id}).decode()]

    def render_malformed(self) -> str:
        return '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":-1}]}'

    def candle_query(self, path: str, query: dict[str, str]) -> CandleQuery | None:
        if path.rstrip("/") != "/0/public/OHLC":
            return None
        interval_s = int(query.get("interval", "1")) * 60
        pair = query["pair"]
        native = pair if "/" in pair else _native_from_rest(pair)
        since = int(query["since"]) + 1 if "since" in query else None
        return CandleQuery(native, interval_s, since, None, self.max_candles)

    def render_candles(self, candles: Sequence[Candle], query: CandleQuery) -> str:
        rows: list[Any] = [
            [
                c.open_time,
                number_text(c.open),
                number_text(c.high),
                number_text(c.low),
                number_text(c.close),
                number_text(c.close),
                number_text(c.volume),
                c.trade_count or 0,
            ]
            for c in candles
        ]
        last = candles[-1].open_time if candles else (query.start or 0)
        return orjson.dumps({"error": [], "result": {self.rest_pair(query.native_symbol): rows, "last": last}}).decode()


def _native_from_rest(pair: str) -> str:
    from daemon.feeds.base import split_concat

    base, q = split_concat(pair)
    return f"{_ALIASES.get(base, base)}/{_ALIASES.get(q, q)}"


PROTOCOL = Kraken()
