"""The shape every exchange module has: the protocol base class.

An exchange module is a sans-I/O core: it turns raw websocket text into trades and REST bodies
into `Candle`s, and (for the simulator) renders the same messages back. The connection,
backfill and simulator shells do the I/O; because the simulator speaks through the same module
that parses, parser and simulator cannot drift apart.

Records live in `records`, field conversion in `fields`, symbol spelling in `symbols`, the fast
path's typed schemas in `schema`; the names are re-exported here so an exchange module imports
its whole toolkit from one place.

Two parsers per exchange, one answer: `fast_scan` (msgspec schemas of the frames that carry the
traffic) settles what it recognises exactly, and hands everything else to `scan` (orjson, every
rule and reason). `scan_safe` is the one entry: fast, else full, never raising.

Work per frame is bounded: a frame over `max_frame_bytes` is rejected before it is decoded, a
frame with more than `max_trades` trades is rejected, numbers longer than `fields.MAX_TEXT` are
never converted, and orjson refuses nesting deeper than 1024. A rejected frame is a counted reason.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from typing import Any, Literal

import orjson

from daemon.feeds.fields import (
    EXACT,
    US_PER_MS,
    iso_us,
    number_text,
    price_text,
    size_text,
    us_from_datetime,
    us_from_iso,
)
from daemon.feeds.records import (
    ACK,
    HEARTBEAT,
    MESSAGE_KINDS,
    NO_ROWS,
    OTHER,
    TRADES,
    BadMessage,
    Block,
    Candle,
    CandleQuery,
    ClientRequest,
    HotRow,
    MessageKind,
    ParseResult,
    Row,
    Side,
    SimState,
    Trade,
    error,
    malformed,
    refused,
)
from daemon.feeds.symbols import QUOTES, SymbolFormat, split_concat, split_normal, split_separated

__all__ = [
    "ACK", "BAD_JSON", "EXACT", "HEARTBEAT", "MESSAGE_KINDS", "NO_ROWS", "OTHER", "QUOTES", "TRADES", "BadMessage",
    "Block", "Candle", "CandleColumns", "CandleQuery", "ClientRequest", "ExchangeProtocol", "HotRow", "MessageKind",
    "ParseResult", "Row", "Side", "SimState", "SymbolFormat", "Trade", "error", "exact_rows", "interval_name",
    "iso_to_us", "iso_us", "loads", "loads_exact", "malformed", "number_text", "price", "refused", "size",
    "split_concat",
    "split_normal", "split_separated", "us_from_datetime",
]

log = logging.getLogger("barcast.feeds")

BAD_JSON = malformed("bad_json")


def price(value: Any) -> Decimal:
    """An exact trade/candle price, or BadMessage naming the problem."""
    d = price_text(value)
    if d is None:
        raise BadMessage("bad_price")
    return d


def size(value: Any) -> Decimal:
    """An exact candle volume (zero allowed: a candle with no trades), or BadMessage."""
    d = size_text(value)
    if d is None:
        raise BadMessage("bad_size")
    return d


def iso_to_us(value: Any) -> int:
    us = us_from_iso(value)
    if us is None:
        raise BadMessage("bad_time")
    return us


def loads(text: str | bytes) -> Any:
    """orjson, for messages whose numbers are all strings (or do not matter)."""
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        raise BadMessage("bad_json") from None


def loads_exact(text: str | bytes) -> Any:
    """Standard-library JSON with JSON numbers read as exact Decimals (ints stay ints)."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError, ArithmeticError):
        raise BadMessage("bad_json") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


@dataclass(frozen=True, slots=True)
class CandleColumns:
    """Where a REST candle row (a JSON array) keeps each value: the column order as data."""

    time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    count: int | None = None
    time_unit: Literal["s", "ms"] = "s"

    @property
    def width(self) -> int:
        return 1 + max(self.time, self.open, self.high, self.low, self.close, self.volume, self.count or 0)

    def candle(self, r: Any) -> Candle:
        if not isinstance(r, list) or len(r) < self.width or type(r[self.time]) is not int:
            raise BadMessage("bad_candle")
        t = r[self.time] // US_PER_MS if self.time_unit == "ms" else r[self.time]
        n = r[self.count] if self.count is not None else None
        count = n if type(n) is int else None
        return Candle(t, price(r[self.open]), price(r[self.high]), price(r[self.low]), price(r[self.close]),
                      size(r[self.volume]), count)

    def candles(self, rows: Any) -> list[Candle]:
        if not isinstance(rows, list):
            raise BadMessage("candles_not_a_list")
        out = [self.candle(r) for r in rows]
        out.sort(key=lambda c: c.open_time)
        return out


class ExchangeProtocol(ABC):
    """Everything one exchange's protocol means. Subclasses are stateless; one instance per module."""

    name: str
    ws_url: str
    rest_url: str
    symbols: SymbolFormat
    #: Path the simulator serves the websocket on (the exchange's real path).
    ws_path: str = "/"
    #: Most candles one REST request returns.
    max_candles: int = 300
    #: Seconds between the client's own application-level heartbeats (None: the exchange needs none).
    client_heartbeat_s: float | None = None
    #: Seconds between server heartbeats the simulator sends on its own (None: none).
    server_heartbeat_s: float | None = None
    #: Minimum seconds between REST requests (public rate limits, with margin).
    rest_min_interval_s: float = 0.2
    #: Largest frame parsed; the websocket refuses frames above 4x this (see connection.py).
    max_frame_bytes: int = 1 << 20
    #: Most trades one frame may carry (real frames carry one to a few hundred).
    max_trades: int = 1000
    #: Text every trade frame contains (and few others): where a batch of frames is not all
    #: trades, the runs of frames with it are tried as blocks (`FeedSession.messages`).
    trade_marker: str | None = None
    #: The exchange puts several trades in one frame on busy markets (`render_trades`).
    bundles_trades: bool = False
    #: Seconds between messages the client sends (Binance closes a connection sending more than
    #: 5 a second); 0: no pacing.
    send_interval_s: float = 0.0
    #: Heartbeats the exchange sends byte for byte the same: a batch recognises them without
    #: parsing (`FeedSession.messages`); every other spelling is parsed.
    heartbeat_frames: tuple[str, ...] = ()

    # symbols
    def native_symbol(self, symbol: str) -> str:
        return self.symbols.native(symbol)

    def normal_symbol(self, native: str) -> str:
        return self.symbols.normal(native)

    # client side
    @abstractmethod
    def subscribe_messages(self, natives: Sequence[str]) -> list[str]: ...

    def client_heartbeat(self) -> str | None:
        return None

    def expected_acks(self, natives: Sequence[str]) -> int:
        """Acknowledgements that together confirm the subscription of all `natives` (one request)."""
        return 1

    #: A refusal of one symbol voids the whole request (Coinbase ignores a subscribe naming an
    #: unknown product): the others in it must be asked for again.
    refusal_drops_request: bool = False

    def subscribe_requests(self, natives: Sequence[str]) -> list[tuple[tuple[str, ...], str]]:
        """The subscribe messages for `natives`, each with the natives it asks for: each message
        gets its own answers (`expected_acks`), so a refusal naming no symbol is the oldest
        outstanding request's. One message for all, unless the exchange takes one per symbol."""
        msgs = self.subscribe_messages(natives)
        if len(msgs) == 1:
            return [(tuple(natives), msgs[0])]
        if len(msgs) != len(natives):
            raise ValueError(f"{self.name}: {len(msgs)} subscribe messages for {len(natives)} symbols")
        return [((n,), m) for n, m in zip(natives, msgs, strict=True)]

    def rest_refusal(self, status: int, body: bytes) -> str | None:
        """The exchange's reason, when a REST candles answer (`status`, `body`) says the symbol
        is not listed (where the websocket accepts any symbol and stays silent, this is how the
        daemon learns it); None: another failure (retried as usual)."""
        return None

    @abstractmethod
    def scan(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        """One message to its classification and trade rows (the hot path: no Trade objects).

        May raise BadMessage (and anything a garbled message provokes); `scan_safe` catches."""

    def fast_scan(self, text: str) -> tuple[ParseResult, list[HotRow]] | None:
        """The hot path for the frames that dominate a feed (trades, book updates), decoded by a
        typed schema (msgspec) that builds only the fields a trade needs, trades as `HotRow`s
        (numbers as text, see `fields.hot_numbers`); None (or any exception) hands the frame to
        `scan`. It may only settle a frame the way `scan` would: same kind, same rows once the
        texts are Decimals (`exact_rows`); every doubt (an unknown key, an unusual type, an
        invalid field) is `scan`'s."""
        return None

    def fast_block(self, texts: Sequence[str]) -> Block | None:
        """The trades of frames that are all plain trade frames, in time order, as columns: what
        `fast_scan` of each would return, concatenated, or None (or any exception) when any frame
        is anything else. Frames of several trades (busy markets, where the exchange batches
        them) say where each begins (`Block.starts`, from `block_rows`). Checks run per column
        (`fields.hot_columns`, bounds of times and ids), so it accepts a subset of what
        `fast_scan` accepts. Exchanges without it answer None: frame by frame."""
        return None

    def block_rows(self, frames: Iterable[list[Any]]) -> tuple[list[Any], list[int] | None]:
        """The trades of frames (each frame's list of them), one after the other, and
        `Block.starts` (None when each frame has one). Raises ValueError where a frame has none
        or more than `max_trades` (`fast_scan` refuses those). Each frame's list is dropped as
        soon as it is read: decoded frames are objects the garbage collector would walk."""
        rows: list[Any] = []
        counts: list[int] = []
        for trades in frames:
            rows.extend(trades)
            counts.append(len(trades))
        if counts.count(1) == len(counts):
            return rows, None
        if min(counts) < 1 or max(counts) > self.max_trades:
            raise ValueError("not a block of trade frames")
        return rows, list(accumulate(counts, initial=0))

    def scan_block(self, texts: Sequence[str | bytes]) -> Block | None:
        """`fast_block` of frames that `scan_hot` would give to `fast_scan` (text within
        `max_frame_bytes`); None when not, or when it refuses or raises. Never raises."""
        try:
            # the join refuses bytes; a block within the frame limit has every frame within it
            limit = self.max_frame_bytes
            if len("".join(texts)) > limit and max(map(len, texts)) > limit:  # type: ignore[arg-type]
                return None
            return self.fast_block(texts)  # type: ignore[arg-type]  # all str, checked above
        except Exception:
            return None

    def scan_hot(self, text: str | bytes) -> tuple[ParseResult, list[HotRow]]:
        """`fast_scan`, else `scan` (its rows as `HotRow`s); never raises. The session's entry."""
        # bytes (binary frames) may hold invalid UTF-8 that only orjson judges
        if type(text) is str and len(text) <= self.max_frame_bytes:
            try:
                hit = self.fast_scan(text)
            except Exception:  # whatever the schema refuses is the full path's to judge
                hit = None
            if hit is not None:
                return hit
        return self.scan_full_hot(text)

    def scan_full_hot(self, text: str | bytes) -> tuple[ParseResult, list[HotRow]]:
        """`scan_full`, its Decimal rows as `HotRow`s."""
        res, rows = self.scan_full(text)
        if not rows:
            return res, NO_ROWS
        return res, [(n, tid, t, p, float(p), q, side) for n, tid, t, p, q, side in rows]

    def scan_safe(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        """`fast_scan`, else `scan`, with exact rows; never raises: garbage, oversize frames and
        hostile numbers are a reason."""
        if type(text) is str and len(text) <= self.max_frame_bytes:
            try:
                hit = self.fast_scan(text)
            except Exception:
                hit = None
            if hit is not None:
                return hit[0], exact_rows(hit[1])
        return self.scan_full(text)

    def scan_full(self, text: str | bytes) -> tuple[ParseResult, list[Row]]:
        """`scan` that never raises (the reference the fast path must agree with)."""
        if len(text) > self.max_frame_bytes:
            return malformed("frame_too_large"), NO_ROWS
        try:
            return self.scan(text)
        except BadMessage as exc:
            return malformed(exc.reason), NO_ROWS
        except (KeyError, IndexError, TypeError, AttributeError, ValueError, ArithmeticError, RecursionError) as exc:
            return malformed(f"unexpected_shape:{type(exc).__name__}"), NO_ROWS
        except Exception as exc:  # a parser bug: still never the connection loop's problem
            log.exception("parser failed", extra={"exchange": self.name})
            return malformed(f"internal_error:{type(exc).__name__}"), NO_ROWS

    def parse(self, text: str | bytes) -> ParseResult:
        """Raw text to a classification and normalised trades. Never raises."""
        res, rows = self.scan_safe(text)
        if not rows:
            return res
        try:
            normal = self.symbols.normal
            name = self.name
            trades = tuple(
                Trade(name, normal(n), n, None if tid is None else str(tid), t, p, q, side)  # type: ignore[arg-type]
                for n, tid, t, p, q, side in rows
            )
        except BadMessage as exc:
            return malformed(exc.reason)
        return ParseResult(res.kind, trades, res.reason, res.time_us, res.reconnect)

    def rows(self, data: Any) -> list[Any]:
        """A frame's list of trade objects, bounded by `max_trades`."""
        if type(data) is not list:
            raise BadMessage("bad_data")
        if len(data) > self.max_trades:
            raise BadMessage("too_many_trades")
        return data

    @abstractmethod
    def candles_path(self, native: str, interval_s: int, start: int, end: int) -> str:
        """Path and query (relative to `rest_url`) for candles opening in [start, end)."""

    @abstractmethod
    def parse_candles(self, text: str | bytes, interval_s: int) -> list[Candle]:
        """Candles from a REST body, oldest first; raises BadMessage when the body is not candles."""

    # simulator side
    def parse_client(self, text: str | bytes) -> ClientRequest:
        """What a client sent the simulator: JSON objects go to `client_request`; anything else,
        or an object it does not recognise, is "unknown"."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return ClientRequest("unknown", raw=text)
        if not isinstance(msg, dict):
            return ClientRequest("unknown", raw=msg)
        return self.client_request(msg) or ClientRequest("unknown", raw=msg)

    @abstractmethod
    def client_request(self, msg: dict[str, Any]) -> ClientRequest | None:
        """A subscribe or heartbeat request in this exchange's dialect, or None."""

    @abstractmethod
    def render_ack(self, request: ClientRequest) -> list[str]: ...

    def render_subscribe(
        self, request: ClientRequest, unlisted: Sequence[str], state: SimState
    ) -> tuple[list[str], tuple[str, ...]]:
        """The simulator: what the exchange answers `request`, of which `unlisted` are symbols it
        does not list, and the natives it then streams. By default the exchange accepts any
        symbol and streams nothing for the unknown ones (Binance, Bitstamp)."""
        return self.render_ack(request), tuple(n for n in request.natives if n not in unlisted)

    def render_rest_unknown(self, native: str) -> tuple[int, str]:
        """The simulator: the REST candles answer (HTTP status, body) for a symbol not listed."""
        return 404, '{"message":"NotFound"}'

    @abstractmethod
    def render_trade(self, trade: Trade, state: SimState) -> str: ...

    def render_trades(self, trades: Sequence[Trade], state: SimState) -> str:
        """Several trades in one frame, as exchanges that batch them send on busy markets
        (`bundles_trades`); the others send one trade a frame."""
        if len(trades) != 1:
            raise ValueError(f"{self.name} sends one trade a frame")
        return self.render_trade(trades[0], state)

    def render_server_heartbeat(self, natives: Sequence[str], state: SimState) -> list[str]:
        return []

    def render_heartbeat_reply(self, request: ClientRequest, state: SimState) -> list[str]:
        return []

    @abstractmethod
    def candle_query(self, path: str, query: dict[str, str]) -> CandleQuery | None:
        """The simulator's REST router: what a candles request asks for (None: not a candles path)."""

    @abstractmethod
    def render_candles(self, candles: Sequence[Candle], query: CandleQuery) -> str: ...

    def render_malformed(self) -> str:
        """A message this exchange's parser must count as malformed (simulator fault injection)."""
        return '{"type": "match", "price": "not-a-number"'


def exact_rows(rows: list[HotRow]) -> list[Row]:
    """Hot rows with their number texts as exact Decimals (what `price_text`/`size_text` give
    for the plain text the fast path accepts)."""
    if not rows:
        return NO_ROWS
    return [(n, tid, t, Decimal(p), Decimal(q), side) for n, tid, t, p, _pf, q, side in rows]


def interval_name(interval_s: int, names: dict[int, str]) -> str:
    try:
        return names[interval_s]
    except KeyError:
        raise ValueError(f"interval of {interval_s}s is not offered by this exchange") from None
