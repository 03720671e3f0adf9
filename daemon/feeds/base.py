"""What every exchange module shares: the trade record, parse results and the protocol shape.

An exchange module is a sans-I/O core: it turns raw websocket text into `ParseResult`s and REST
bodies into `Candle`s, and (for the simulator) renders the same messages back. The connection,
backfill and simulator shells do the I/O; because the simulator speaks through the same module
that parses, parser and simulator cannot drift apart.

Numbers are `Decimal` built from the exchange's text. Where an exchange sends prices as JSON
numbers (Kraken v2, Coinbase REST candles) the text is parsed with the standard library's
`json.loads(parse_float=Decimal)`, never through a float.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Literal

import orjson

Side = Literal["buy", "sell"]
MessageKind = Literal["trade", "heartbeat", "ack", "other", "error", "malformed"]
MESSAGE_KINDS: tuple[MessageKind, ...] = ("trade", "heartbeat", "ack", "other", "error", "malformed")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: Numbers beyond these bounds are rejected as malformed: they are not real prices or sizes, and
#: keeping them bounded keeps every Decimal sum in the aggregator exact (see `EXACT`).
MAX_DIGITS = 30
MAX_ABS_EXPONENT = 30
#: Context for aggregation arithmetic: with inputs bounded as above, sums never round.
EXACT = Context(prec=120)

_NUMBER_RE = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


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
        return _EPOCH + timedelta(microseconds=self.time_us)

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


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one raw message was. `time_us` is an exchange time the message carries (heartbeats)."""

    kind: MessageKind
    trades: tuple[Trade, ...] = ()
    reason: str | None = None
    time_us: int | None = None
    #: The exchange asks the client to reconnect (e.g. Bitstamp `bts:request_reconnect`).
    reconnect: bool = False


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


# Results that carry nothing are shared, so the hot path allocates nothing for them.
HEARTBEAT = ParseResult("heartbeat")
ACK = ParseResult("ack")
OTHER = ParseResult("other")


def malformed(reason: str) -> ParseResult:
    return ParseResult("malformed", reason=reason)


def error(reason: str) -> ParseResult:
    return ParseResult("error", reason=reason)


# --- numbers and times ---------------------------------------------------------------------------


def dec(value: Any, what: str) -> Decimal:
    """Exact Decimal of a number given as text (or as an int/Decimal from a Decimal-aware parse)."""
    if isinstance(value, str):
        if len(value) > 64 or not _NUMBER_RE.match(value):
            raise BadMessage(f"bad_{what}")
        d = Decimal(value)
    elif isinstance(value, Decimal):
        d = value
    elif isinstance(value, int) and not isinstance(value, bool):
        d = Decimal(value)
    else:
        raise BadMessage(f"bad_{what}")  # a float already lost exactness; bools, None, lists…
    if not d.is_finite():
        raise BadMessage(f"bad_{what}")
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    if len(d.as_tuple().digits) > MAX_DIGITS or abs(exp) > MAX_ABS_EXPONENT:
        raise BadMessage(f"{what}_out_of_range")
    return d


def price(value: Any) -> Decimal:
    d = dec(value, "price")
    if d <= 0:
        raise BadMessage("nonpositive_price")
    return d


def size(value: Any) -> Decimal:
    """Sizes may be zero (the simulator's zero-volume bars, see simulator.py) but never negative."""
    d = dec(value, "size")
    if d < 0:
        raise BadMessage("negative_size")
    return d


#: Accept exchange times from 2000 to 2100 only; anything else is a garbled field.
_MIN_US = 946_684_800_000_000
_MAX_US = 4_102_444_800_000_000


def check_us(us: int) -> int:
    if not _MIN_US <= us < _MAX_US:
        raise BadMessage("time_out_of_range")
    return us


def ms_to_us(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit() and len(value) < 20:
            value = int(value)
        else:
            raise BadMessage("bad_time")
    return check_us(value * 1000)


def seconds_text_to_us(value: Any) -> int:
    """'1618678142.557535' (Kraken v1) to microseconds, exactly."""
    if isinstance(value, str):
        if len(value) > 32 or not _NUMBER_RE.match(value):
            raise BadMessage("bad_time")
        d = Decimal(value)
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        d = Decimal(value)
    else:
        raise BadMessage("bad_time")
    try:
        return check_us(int(d.scaleb(6).to_integral_value(rounding="ROUND_FLOOR")))
    except (InvalidOperation, OverflowError, ValueError):
        raise BadMessage("bad_time") from None


_ISO_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,12}))?(Z|[+-]00:?00)?$")


def iso_to_us(value: Any) -> int:
    """'2021-04-17T16:43:37.089723Z' (any number of fraction digits, truncated to µs) to µs."""
    if not isinstance(value, str):
        raise BadMessage("bad_time")
    m = _ISO_RE.match(value)
    if m is None:
        raise BadMessage("bad_time")
    try:
        dt = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}+00:00")
    except ValueError:
        raise BadMessage("bad_time") from None
    frac = (m.group(3) or "")[:6].ljust(6, "0")
    return check_us((dt - _EPOCH) // _US + int(frac))


def iso_us(us: int) -> str:
    """ISO-8601 UTC with microseconds and a Z, the time format of every output."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def us_from_datetime(t: datetime) -> int:
    return (t - _EPOCH) // _US


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
    except (ValueError, TypeError, RecursionError):
        raise BadMessage("bad_json") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def number_text(d: Decimal) -> str:
    """A Decimal as JSON number text (exact; for rendering exchanges that send numbers)."""
    return format(d, "f")


# --- symbols ---------------------------------------------------------------------------------------

#: Quote currencies recognised at the end of concatenated symbols (BTCUSDT, btcusd), longest first.
QUOTES = tuple(
    sorted(
        (
            "USDT",
            "USDC",
            "BUSD",
            "TUSD",
            "FDUSD",
            "USDP",
            "DAI",
            "USD",
            "EUR",
            "GBP",
            "JPY",
            "AUD",
            "CAD",
            "CHF",
            "TRY",
            "BRL",
            "BTC",
            "ETH",
            "BNB",
            "PAX",
            "XBT",
        ),
        key=len,
        reverse=True,
    )
)


def split_concat(native: str) -> tuple[str, str]:
    """BTCUSDT -> (BTC, USDT). The longest known quote wins unless it leaves a base under three
    letters while a shorter one does not (XBTUSD is XBT-USD, not XB-TUSD)."""
    up = native.upper()
    matches = [q for q in QUOTES if up.endswith(q) and len(up) > len(q)]
    if not matches:
        raise BadMessage("unknown_symbol")
    q = next((m for m in matches if len(up) - len(m) >= 3), matches[0])
    return up[: -len(q)], q


def split_separated(native: str, sep: str) -> tuple[str, str]:
    """XBT/USD with sep "/" -> (XBT, USD); anything but exactly two non-empty parts is malformed."""
    if not isinstance(native, str) or native.count(sep) != 1:
        raise BadMessage("bad_symbol")
    base, quote = native.upper().split(sep)
    if not base or not quote:
        raise BadMessage("bad_symbol")
    return base, quote


def split_normal(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.upper().partition("-")
    if not sep or not base or not quote:
        raise ValueError(f"bad symbol {symbol!r}: expected BASE-QUOTE like 'BTC-USD'")
    return base, quote


# --- the shape every exchange module has ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimState:
    """What a simulated exchange tells a renderer about the connection (sequence numbers etc.)."""

    now_us: int
    sequence: int = 0
    last_trade_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ExchangeProtocol(ABC):
    """Everything one exchange's protocol means. Subclasses are stateless; one instance per module."""

    name: str
    ws_url: str
    rest_url: str
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

    # symbols
    @abstractmethod
    def native_symbol(self, symbol: str) -> str: ...

    @abstractmethod
    def normal_symbol(self, native: str) -> str: ...

    # client side
    @abstractmethod
    def subscribe_messages(self, natives: Sequence[str]) -> list[str]: ...

    def client_heartbeat(self) -> str | None:
        return None

    def expected_acks(self, natives: Sequence[str]) -> int:
        """Acknowledgements that together confirm the subscription of all `natives`."""
        return 1

    @abstractmethod
    def parse_message(self, text: str | bytes) -> ParseResult:
        """Parse one message; may raise BadMessage (and anything a garbled message provokes)."""

    def parse(self, text: str | bytes) -> ParseResult:
        """Raw text to a classification and trades. Never raises: garbage is a counted reason."""
        try:
            return self.parse_message(text)
        except BadMessage as exc:
            return malformed(exc.reason)
        except (
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            ValueError,
            InvalidOperation,
            RecursionError,
            OverflowError,
        ) as exc:
            return malformed(f"unexpected_shape:{type(exc).__name__}")

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

    @abstractmethod
    def render_trade(self, trade: Trade, state: SimState) -> str: ...

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


def interval_name(interval_s: int, names: dict[int, str]) -> str:
    try:
        return names[interval_s]
    except KeyError:
        raise ValueError(f"interval of {interval_s}s is not offered by this exchange") from None
