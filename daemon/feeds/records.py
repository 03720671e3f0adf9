"""The records every exchange module shares: trades, parse results, candles, simulator requests.

Frozen and slotted: they travel forward through the house and are never changed on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol

from daemon.feeds.fields import datetime_from_us, iso_us

Side = Literal["buy", "sell"]
MessageKind = Literal["trade", "heartbeat", "ack", "other", "error", "malformed"]
MESSAGE_KINDS: tuple[MessageKind, ...] = ("trade", "heartbeat", "ack", "other", "error", "malformed")


class BadMessage(Exception):
    """Raised inside a parser for a message that is not what its type promises; never escapes `parse`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Trade:
    """One normalised trade. `time_us` is the exchange's timestamp in UTC microseconds."""

    exchange: str
    symbol: str  # normalised BASE-QUOTE
    native_symbol: str
    trade_id: str | None
    time_us: int
    price: Decimal
    size: Decimal
    side: Side | None

    @property
    def time(self) -> datetime:
        return datetime_from_us(self.time_us)

    def as_json(self) -> dict[str, Any]:
        """The `barcast parse` output object (decimals as strings, ISO-8601 UTC time)."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "trade_id": self.trade_id,
            "time": iso_us(self.time_us),
            "price": format(self.price, "f"),
            "size": format(self.size, "f"),
            "side": self.side,
        }


#: A trade as the hot path carries it: (native symbol, trade id, time µs, price, size, side).
#: A plain tuple, so a frame's trades cost one small allocation each; `Trade` is built only
#: where a rich record is wanted (`barcast parse`, tests).
Row = tuple[str, Any, int, Decimal, Decimal, str | None]
#: A trade as the session's hot path carries it: (native symbol, trade id, time µs, price,
#: float(price), size, side), with price and size as the exchange's plain decimal text (or the
#: Decimals of the full parser). The aggregator builds Decimals from them only at bar close.
HotRow = tuple[str, Any, int, Any, float, Any, str | None]


class TimeKeys(Protocol):
    """How a block's time keys read as µs, and the least key at or after a time."""

    def us(self, key: Any) -> int: ...

    def key(self, us: int) -> Any: ...


class Block(NamedTuple):
    """The trades of a block of frames as columns (see `ExchangeProtocol.fast_block`)."""

    natives: list[str]
    #: trade ids (None: the exchange sends none)
    ids: list[Any] | None
    #: time keys, ascending: the exchange's ints or text, read through `clock`
    times: list[Any]
    #: `fields.Scaled`, `fields.IsoKeys` or `fields.DigitKeys`
    clock: TimeKeys
    #: prices as text
    prices: list[Any]
    #: price order keys: floats, or the texts where their order is their values' (`fields.hot_columns`)
    keys: list[Any]
    #: sizes as text
    sizes: list[Any]
    #: where each frame's trades begin, and the end (len: frames + 1); None: one trade per frame
    starts: list[int] | None = None


#: The rows of a frame without trades (shared: never mutated).
NO_ROWS: list[Any] = []


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one raw message was. `time_us` is an exchange time the message carries (heartbeats)."""

    kind: MessageKind
    trades: tuple[Trade, ...] = ()
    reason: str | None = None
    time_us: int | None = None
    #: The exchange asks the client to reconnect (e.g. Bitstamp `bts:request_reconnect`).
    reconnect: bool = False
    #: An "error" that refuses a subscription: the native symbols it names (empty: it names
    #: none, so it answers the oldest request outstanding); None: not a subscription refusal.
    refused: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Candle:
    """One REST candle: open time in Unix seconds, exact OHLCV, trade count where the exchange says."""

    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int | None = None


@dataclass(frozen=True, slots=True)
class CandleQuery:
    """A REST candle request as the simulator understands it: [start, end) in Unix seconds."""

    native_symbol: str
    interval_s: int
    start: int | None
    end: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A message a client sent to the (simulated) exchange."""

    kind: Literal["subscribe", "heartbeat", "unknown"]
    natives: tuple[str, ...] = ()
    request_id: Any = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class SimState:
    """What a simulated exchange tells a renderer about the connection (sequence numbers etc.)."""

    now_us: int
    sequence: int = 0
    last_trade_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# Results that carry nothing are shared, so the hot path allocates nothing for them.
HEARTBEAT = ParseResult("heartbeat")
ACK = ParseResult("ack")
OTHER = ParseResult("other")
TRADES = ParseResult("trade")


def malformed(reason: str) -> ParseResult:
    return ParseResult("malformed", reason=reason)


def error(reason: str) -> ParseResult:
    return ParseResult("error", reason=reason)


def refused(reason: str, natives: tuple[str, ...] = ()) -> ParseResult:
    """The exchange refused a subscription, in its own words (`reason`), naming `natives` (or none)."""
    return ParseResult("error", reason=f"subscription_refused:{reason[:200]}", refused=natives)
