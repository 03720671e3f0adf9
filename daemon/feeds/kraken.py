"""Kraken: websocket v2 `trade` channel (v1 trade arrays parse too), `/0/public/OHLC`.

v2 sends prices and quantities as JSON *numbers*, so the Decimal is built from the digits the
exchange sent, never through a float: the fast path takes each number's raw text (msgspec `Raw`);
the full parser finds the texts in the frame (or re-reads it with `json.loads(parse_float=
Decimal)`). v1 trade arrays carry strings and no trade id. Kraken calls bitcoin XBT in v1 and
REST; symbols are normalised to BTC.
"""

from __future__ import annotations

import re
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
    Side,
    SimState,
    SymbolFormat,
    Trade,
    error,
    interval_name,
    iso_us,
    loads,
    loads_exact,
    malformed,
    number_text,
    refused,
    split_concat,
)
from daemon.feeds.fields import (
    ISO,
    MICROS,
    hot_columns,
    hot_numbers,
    hot_row_seconds,
    is_plain,
    iso_column,
    price_text,
    trade_id_ok,
    trade_ids_ok,
    trade_size_text,
    us_from_iso,
    us_from_seconds,
)
from daemon.feeds.schema import decoder, ignored, results

_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
_REST_ALIASES = {"BTC": "XBT", "DOGE": "XDG"}
_INTERVALS = {60: "1", 300: "5", 900: "15", 3600: "60"}
_OTHER_CHANNELS = frozenset({"status", "book", "ticker", "ohlc", "instrument", "level3"})
_V1_OTHER_EVENTS = frozenset({"systemStatus", "pong"})
#: v2 trade numbers as the exchange wrote them (orjson gives floats; the text is the exact value)
_NUMBER_FIELD = re.compile(r'"(price|qty)":(-?[0-9][0-9.eE+-]{0,39})[,}\s]', re.ASCII)


_SIDES: dict[Any, Side] = {"buy": "buy", "b": "buy", "sell": "sell", "s": "sell"}


# --- the fast path's schema (see schema.py). v2 frames by channel; v1 events by event, with none
# of the keys the full parser looks at first; v1 trade arrays by shape. v2 numbers are taken raw
# (their exact text), and only in plain digits-and-point form.
class _V2Row(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    symbol: str
    side: str
    price: msgspec.Raw
    qty: msgspec.Raw
    timestamp: str
    ord_type: str | None = None
    trade_id: int | None = None


class _V2Trade(msgspec.Struct, tag_field="channel", tag="trade", forbid_unknown_fields=True):
    data: list[_V2Row]
    type: str | None = None


class _V1Status(msgspec.Struct, tag_field="event", tag="subscriptionStatus", kw_only=True):
    status: str | None = None
    channel: None = None
    method: None = None


_V2_RESULTS = {
    **results(ignored("channel", ["heartbeat"]), HEARTBEAT),
    **results(ignored("channel", _OTHER_CHANNELS), OTHER),
}
_V1_RESULTS = {
    **results(ignored("event", ["heartbeat"], absent=["channel", "method"]), HEARTBEAT),
    **results(ignored("event", _V1_OTHER_EVENTS, absent=["channel", "method"]), OTHER),
}
_DECODE_V2 = decoder(_V2Trade, *_V2_RESULTS)
#: trade frames only (a block): no union to resolve
_DECODE_V2_TRADE = decoder(_V2Trade)
_DECODE_V1 = decoder(_V1Status, *_V1_RESULTS)
#: The v1 and v2 heartbeats as Kraken sends them (any other spelling takes the decoder).
_V1_HEARTBEAT = '{"event":"heartbeat"}'
_V2_HEARTBEAT = '{"channel":"heartbeat"}'
_DECODE_V1_TRADES = decoder(tuple[int, list[tuple[str, str, str, str, str, str]], str, str])


def _raw_number(raw: msgspec.Raw) -> str | None:
    text = str(raw, "ascii")
    return text if is_plain(text) else None


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
    symbols = SymbolFormat("/", aliases=_ALIASES)
    # in v2 trade frames ('"channel":"trade","type"') and v1 trade arrays ('],"trade","XBT/USD"]')
    trade_marker = '"trade","'
    heartbeat_frames = (_V1_HEARTBEAT, _V2_HEARTBEAT)
    bundles_trades = True
    candle_columns = CandleColumns(time=0, open=1, high=2, low=3, close=4, volume=6, count=7)

    def subscribe_messages(self, natives: Sequence[str]) -> list[str]:
        doc = {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": list(natives), "snapshot": False},
        }
        return [orjson.dumps(doc).decode()]

    def expected_acks(self, natives: Sequence[str]) -> int:
        return len(natives)  # one acknowledgement per symbol

    def fast_scan(self, text: str) -> tuple[ParseResult, list[HotRow]] | None:
        if text == _V1_HEARTBEAT:  # most of a quiet v1 feed, byte for byte
            return HEARTBEAT, NO_ROWS
        if text.startswith('{"channel"'):
            msg = _DECODE_V2(text)
            if type(msg) is not _V2Trade:
                return _V2_RESULTS[type(msg)]
            return self._fast_v2(msg.data)
        if text.startswith("["):
            _channel, rows, name, native = _DECODE_V1_TRADES(text)
            if name != "trade" or not rows or len(rows) > self.max_trades:
                return None
            v1: list[HotRow] = []
            for p, q, ts, side, _type, _misc in rows:
                hit = hot_row_seconds(p, q, ts)
                if hit is None or side not in _SIDES:
                    return None
                v1.append((native, None, hit[1], p, hit[0], q, _SIDES[side]))
            return TRADES, v1
        if text.startswith("{") and '"event"' in text:
            msg = _DECODE_V1(text)
            if type(msg) is _V1Status:
                return (ACK, NO_ROWS) if msg.status in ("subscribed", "unsubscribed") else None
            return _V1_RESULTS[type(msg)]
        return None

    def fast_block(self, texts: Sequence[str]) -> Block | None:
        if texts[0].startswith("["):
            return self._v1_block(texts)
        rows, starts = self.block_rows(m.data for m in map(_DECODE_V2_TRADE, texts))  # any other frame raises
        n = len(rows)
        # the numbers' raw JSON text, joined and split in C (a quoted number fails the checks)
        ps = str(b"\x00".join([d.price for d in rows]), "ascii").split("\x00")
        qs = str(b"\x00".join([d.qty for d in rows]), "ascii").split("\x00")
        keys = hot_columns(ps, qs) if len(ps) == n == len(qs) else None
        if keys is None or not {d.side for d in rows} <= _SIDES.keys():
            return None
        ts = [d.timestamp for d in rows]
        if not iso_column(ts):
            return None
        tids = [d.trade_id for d in rows]
        ids: list[Any] | None = tids
        if None in tids:  # ids are all there or all absent (frame by frame otherwise)
            if tids.count(None) != n:
                return None
            ids = None
        elif not trade_ids_ok(tids):
            return None
        return Block([d.symbol for d in rows], ids, ts, ISO, ps, keys, qs, starts)

    def _v1_block(self, texts: Sequence[str]) -> Block | None:
        frames = list(map(_DECODE_V1_TRADES, texts))  # any other frame raises
        if any(name != "trade" for _channel, _rows, name, _native in frames):
            return None
        rows, starts = self.block_rows(trades for _channel, trades, _name, _native in frames)
        natives = [native for _channel, trades, _name, native in frames for _ in trades]
        ps = [r[0] for r in rows]
        qs = [r[1] for r in rows]
        keys = hot_columns(ps, qs)
        if keys is None or not {r[3] for r in rows} <= _SIDES.keys():
            return None
        ts = list(map(us_from_seconds, [r[2] for r in rows]))
        if None in ts or ts != sorted(ts):  # type: ignore[type-var]  # no None by then
            return None
        return Block(natives, None, ts, MICROS, ps, keys, qs, starts)

    def _fast_v2(self, data: list[_V2Row]) -> tuple[ParseResult, list[HotRow]] | None:
        if not data or len(data) > self.max_trades:
            return None
        out: list[HotRow] = []
        for d in data:
            p = str(d.price, "ascii")
            q = str(d.qty, "ascii")
            pf = hot_numbers(p, q)
            t = us_from_iso(d.timestamp)
            side = _SIDES.get(d.side)
            tid = d.trade_id
            if pf is None or t is None or side is None or (tid is not None and not trade_id_ok(tid)):
                return None
            out.append((d.symbol, tid, t, p, pf, q, side))
        return TRADES, out

    def scan(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return BAD_JSON, NO_ROWS
        if type(msg) is list:
            return self._v1_array(msg)
        if type(msg) is not dict:
            return malformed("not_an_object"), NO_ROWS
        channel = msg.get("channel")
        if channel == "trade":
            return self._v2_trades(msg, text)
        if channel == "heartbeat":
            return HEARTBEAT, NO_ROWS
        if channel in _OTHER_CHANNELS:
            return OTHER, NO_ROWS
        method = msg.get("method")
        if method in ("subscribe", "unsubscribe"):
            if msg.get("success") is True:
                return ACK, NO_ROWS
            if method == "subscribe":  # {"error":"Currency pair not supported FOO/USD",...,"symbol":"FOO/USD"}
                symbol = msg.get("symbol")
                return refused(str(msg.get("error")), (symbol,) if type(symbol) is str else ()), NO_ROWS
            return error(f"exchange_error:{str(msg.get('error'))[:60]}"), NO_ROWS
        if method == "pong":
            return HEARTBEAT, NO_ROWS
        event = msg.get("event")  # v1
        if event == "heartbeat":
            return HEARTBEAT, NO_ROWS
        if event == "subscriptionStatus":
            if msg.get("status") in ("subscribed", "unsubscribed"):
                return ACK, NO_ROWS
            if msg.get("status") == "error":  # v1: {"errorMessage":"Currency pair not supported XBT/FOO","pair":...}
                pair = msg.get("pair")
                return refused(str(msg.get("errorMessage")), (pair,) if type(pair) is str else ()), NO_ROWS
            return error(f"exchange_error:{str(msg.get('errorMessage'))[:60]}"), NO_ROWS
        if event in _V1_OTHER_EVENTS:
            return OTHER, NO_ROWS
        if event == "error" or "error" in msg:
            return error(f"exchange_error:{str(msg.get('errorMessage') or msg.get('error'))[:60]}"), NO_ROWS
        return malformed("unexpected_type"), NO_ROWS

    def _v2_trades(self, msg: dict[str, Any], text: str | bytes) -> tuple[ParseResult, list[Row]]:
        data = self.rows(msg["data"])
        exact: list[Any] | None = None  # the frame re-read with exact numbers, only if needed
        texts: list[tuple[Any, Any]] | bool | None = False  # False: not looked for yet
        out: list[Row] = []
        for i, d in enumerate(data):
            native = d["symbol"]
            if type(native) is not str:
                raise BadMessage("bad_symbol")
            tid = d.get("trade_id")
            if tid is not None and not trade_id_ok(tid):
                raise BadMessage("bad_trade_id")
            pv, qv = d["price"], d["qty"]
            if type(pv) is float or type(qv) is float:
                if texts is False:
                    texts = self._number_texts(text, data)
                if isinstance(texts, list):
                    pv, qv = texts[i]
                else:
                    if exact is None:
                        exact = self.rows(loads_exact(text)["data"])
                    pv, qv = exact[i]["price"], exact[i]["qty"]
            t = us_from_iso(d["timestamp"])
            if t is None:
                raise BadMessage("bad_time")
            p = price_text(pv)
            if p is None:
                raise BadMessage("bad_price")
            q = trade_size_text(qv)
            if q is None:
                raise BadMessage("bad_size")
            out.append((native, tid, t, p, q, _side(d["side"])))
        return TRADES, out

    @staticmethod
    def _number_texts(text: str | bytes, data: list[Any]) -> list[tuple[Any, Any]] | None:
        """The price and qty text of each trade, as sent; None when the text does not line up
        with the decoded frame one to one (then the exact standard-library parse decides)."""
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        found = _NUMBER_FIELD.findall(raw)
        if len(found) != 2 * len(data):
            return None
        out = []
        it = iter(found)
        for d in data:
            vals = {}
            for _ in range(2):
                key, num = next(it)
                vals[key] = num
            if len(vals) != 2:
                return None
            pv, qv = d.get("price"), d.get("qty")
            # each text must be the number orjson decoded at that place (or a non-float left as is)
            for key, v in (("price", pv), ("qty", qv)):
                if type(v) is float or type(v) is int:
                    try:
                        if float(vals[key]) != v:
                            return None
                    except ValueError:
                        return None
                else:
                    vals[key] = v
            out.append((vals["price"], vals["qty"]))
        return out

    def _v1_array(self, msg: list[Any]) -> tuple[ParseResult, list[Row]]:
        if len(msg) < 4:
            raise BadMessage("bad_array")
        name, native = msg[-2], msg[-1]
        if name != "trade":
            if isinstance(name, str) and name.split("-")[0] in ("book", "ticker", "spread", "ohlc"):
                return OTHER, NO_ROWS
            raise BadMessage("unexpected_type")
        if type(native) is not str:
            raise BadMessage("bad_symbol")
        out: list[Row] = []
        for r in self.rows(msg[1]):
            t = us_from_seconds(r[2])
            if t is None:
                raise BadMessage("bad_time")
            p = price_text(r[0])
            if p is None:
                raise BadMessage("bad_price")
            q = trade_size_text(r[1])
            if q is None:
                raise BadMessage("bad_size")
            out.append((native, None, t, p, q, _side(r[3])))
        return TRADES, out

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
        return self.candle_columns.candles(rows)

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

    def render_subscribe(
        self, request: ClientRequest, unlisted: Sequence[str], state: SimState
    ) -> tuple[list[str], tuple[str, ...]]:
        """One answer per symbol: the listed ones acknowledged, each unlisted one refused."""
        now = iso_us(state.now_us)
        out = []
        for n in request.natives:
            one = ClientRequest("subscribe", (n,), request.request_id)
            if n not in unlisted:
                out += self.render_ack(one)
                continue
            doc = {"error": f"Currency pair not supported {n}", "method": "subscribe", "req_id": request.request_id,
                   "success": False, "symbol": n, "time_in": now, "time_out": now}
            out.append(orjson.dumps({k: v for k, v in doc.items() if v is not None}).decode())
        return out, tuple(n for n in request.natives if n not in unlisted)

    def rest_refusal(self, status: int, body: bytes) -> str | None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        errors = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(errors, list):
            return None
        return next((e for e in errors if isinstance(e, str) and "Unknown asset pair" in e), None)

    def render_rest_unknown(self, native: str) -> tuple[int, str]:
        return 200, '{"error":["EQuery:Unknown asset pair"]}'

    def render_trade(self, trade: Trade, state: SimState) -> str:
        return self.render_trades([trade], state)

    def render_trades(self, trades: Sequence[Trade], state: SimState) -> str:
        # numbers as JSON numbers, exactly as Kraken v2 sends them
        rows = ",".join(
            f'{{"symbol":"{t.native_symbol}","side":"{t.side}","price":{number_text(t.price)},'
            f'"qty":{number_text(t.size)},"ord_type":"market","trade_id":{int(t.trade_id or 0)},'
            f'"timestamp":"{iso_us(t.time_us)}"}}'
            for t in trades
        )
        return f'{{"channel":"trade","type":"update","data":[{rows}]}}'

    def render_server_heartbeat(self, natives: Sequence[str], state: SimState) -> list[str]:
        return [_V2_HEARTBEAT]

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
    base, q = split_concat(pair)
    return f"{_ALIASES.get(base, base)}/{_ALIASES.get(q, q)}"


PROTOCOL = Kraken()
