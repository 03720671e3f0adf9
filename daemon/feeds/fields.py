"""Field conversion for every exchange: decimal text -> exact Decimal, any time unit -> UTC µs.

The one place that knows time units (no other module spells 1_000_000) and the one place that
turns an exchange's number text into a Decimal. Every converter here **cannot raise**: it returns
the value, or None when the field is not a valid number or time (garbage, NaN/Infinity text,
1e999999, an absurd magnitude, a date outside 2000-2100). Parsers turn None into a counted,
rejected frame; nothing of the ArithmeticError family ever reaches them.

Bounds keep every later Decimal sum exact (see `EXACT`): at most `MAX_TEXT` characters of text,
magnitudes in [`MIN_MAGNITUDE`, `MAX_PRICE`) for prices and {0} ∪ [`MIN_MAGNITUDE`, `MAX_SIZE`) for
sizes. The fast path (`price_text`/`size_text`) accepts plain digits-and-point text, which is
what exchanges send; anything else (exponents, signs) takes the careful path with the same result.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from itertools import repeat
from typing import Any, Final

from db.records import MAX_PRICE, MAX_SIZE, MIN_MAGNITUDE

#: Microseconds per second / millisecond, nanoseconds per microsecond.
US_PER_S: Final = 1_000_000
US_PER_MS: Final = 1_000
NS_PER_US: Final = 1_000

#: Longest number text accepted (digits, point, sign, exponent).
MAX_TEXT: Final = 40
# Prices below MAX_PRICE, sizes below MAX_SIZE, nothing non-zero below MIN_MAGNITUDE (1e-30: below
# it a number is garbage, and unbounded exponents would make sums inexact): `db.records`, whose
# bounds `import-bars` checks files by too.

#: Context for aggregation arithmetic: with inputs bounded as above, sums never round.
EXACT: Final = Context(prec=160)

#: Exchange times accepted: 2000-01-01 to 2100-01-01; anything else is a garbled field.
MIN_US: Final = 946_684_800 * US_PER_S
MAX_US: Final = 4_102_444_800 * US_PER_S

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_DIGITS_POINT = "0123456789."
_NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?", re.ASCII)


# --- numbers -------------------------------------------------------------------------------------


def decimal(value: Any) -> Decimal | None:
    """Exact, finite, bounded Decimal of a number field (text, int, or a Decimal from an exact
    JSON parse), or None. Floats are refused: they already lost the exchange's digits."""
    if type(value) is str:
        if len(value) > MAX_TEXT or _NUMBER_RE.fullmatch(value) is None:
            return None
        try:
            d = Decimal(value)
        except (ArithmeticError, ValueError):
            return None
    elif type(value) is int:
        if not -(10**MAX_TEXT) < value < 10**MAX_TEXT:
            return None
        d = Decimal(value)
    elif type(value) is Decimal:
        d = value
    else:
        return None
    try:
        if not d.is_finite() or (d and not MIN_MAGNITUDE <= abs(d) < MAX_SIZE):
            return None
        if len(d.as_tuple().digits) > MAX_TEXT:
            return None
    except ArithmeticError:
        return None
    return d


def is_plain(text: str) -> bool:
    """Digits and a point only, at most MAX_TEXT long: the form the fast path converts."""
    return 0 < len(text) <= MAX_TEXT and not text.strip(_DIGITS_POINT)


def price_text(value: Any) -> Decimal | None:
    """A trade or candle price: > 0 and < MAX_PRICE, exact; None otherwise."""
    if type(value) is str and 0 < len(value) <= MAX_TEXT and not value.strip(_DIGITS_POINT):
        try:
            d = Decimal(value)  # digits and a point only: no sign, exponent, NaN or spaces
        except InvalidOperation:  # "", ".", "1.2.3"
            return None
        return d if MIN_MAGNITUDE <= d < MAX_PRICE else None
    g = decimal(value)
    return g if g is not None and MIN_MAGNITUDE <= g < MAX_PRICE else None


def size_text(value: Any) -> Decimal | None:
    """A volume: 0 (a candle with no trades) or in [1e-30, MAX_SIZE); a trade's size is `trade_size_text`."""
    if type(value) is str and 0 < len(value) <= MAX_TEXT and not value.strip(_DIGITS_POINT):
        try:
            d = Decimal(value)
        except InvalidOperation:
            return None
        return d if d < MAX_SIZE and (d >= MIN_MAGNITUDE or not d) else None
    g = decimal(value)
    if g is None or g.is_signed():
        return None
    return g


def trade_size_text(value: Any) -> Decimal | None:
    """A trade's size: > 0 (a trade of nothing is not a trade) and otherwise as `size_text`."""
    d = size_text(value)
    return d if d else None


def hot_numbers(p: Any, q: Any) -> float | None:
    """float(p), when price text `p` and size text `q` are plain digits-and-point text that
    `price_text` and `size_text` accept; None when either is unusual (the exact path judges it).

    The hot path keeps the text and compares floats (see daemon/bars.py). Acceptance is proven
    by floats strictly inside the exact bounds; a size of at most 17 characters with at most
    one point and a non-zero digit needs no float: its value is in [1e-15, 1e17). A zero size and
    the edges take the exact path (which refuses a zero size: a trade of nothing is invalid).
    """
    try:
        if len(p) > MAX_TEXT or p.strip(_DIGITS_POINT) or q.strip(_DIGITS_POINT):
            return None
        pf = float(p)  # digits and a point only: "", ".", "1.2.3" raise, as Decimal refuses them
    except (ValueError, TypeError, AttributeError):
        return None
    n = len(q)
    if _HOT_MIN < pf < _HOT_MAX_PRICE and 0 < n <= 17 and q.count(".") < 2 and q.strip(_ZERO_POINT):
        return pf
    if not _HOT_MIN < pf < _HOT_MAX_PRICE or n > MAX_TEXT:
        return None
    try:
        qf = float(q)
    except ValueError:
        return None
    return pf if _HOT_MIN < qf < _HOT_MAX_SIZE else None


def hot_row_seconds(p: str, q: str, ts: str) -> tuple[float, int] | None:
    """`hot_numbers(p, q)` and `us_from_seconds(ts)` together, for rows of texts (Kraken v1):
    one regex proves the syntax of all three in the form exchanges send, leaving a float and
    the bounds; any other form takes the two converters."""
    if _PLAIN_ROW_SECONDS.fullmatch(f"{p}\x00{q}\x00{ts}") is not None:
        pf = float(p)
        t = int(ts.replace(".", ""))  # ten digits, a point, six digits
        if _HOT_MIN < pf < _HOT_MAX_PRICE and len(q) <= 17 and q.strip(_ZERO_POINT) and MIN_US <= t < MAX_US:
            return pf, t
    pf2 = hot_numbers(p, q)
    t2 = us_from_seconds(ts)
    return None if pf2 is None or t2 is None else (pf2, t2)


def hot_columns(ps: list[Any], qs: list[Any]) -> list[Any] | None:
    """`hot_numbers` of whole columns at once (a block of frames, see `FeedSession.messages`):
    order keys of the prices when every price and size passes, None when any is unusual (then
    each frame takes its own path, which judges it exactly). Checks run per column, in C.

    Accepts a subset of what `hot_numbers` accepts: text of digits and points only; lengths
    within `MAX_TEXT` (17 for sizes, so a valid size is below 1e17 without a float); each size
    with one point at most and a non-zero digit; prices of valid form (one point at most, a
    digit) whose extremes are in the float bounds. The keys order the prices as their values do:
    - the texts themselves when that is so and different texts are different values: all of
      one length with the point at one place (`_uniform`), or all with as many integer digits
      and no trailing zero (`_same_shape`) - so no float per trade;
    - the texts padded with zeros to one width when all have as many integer digits and a
      point (`_padded`: exchanges that strip trailing zeros); equal keys are then equal values,
      which `Aggregator.add_block` settles as Decimals where the texts differ;
    - else `float(p)` per price (equal floats may then be different texts; see `_tie`).
    """
    try:
        jp = "".join(ps)
        if _DIGITS_POINTS.fullmatch(jp) is None:
            return None
        # sizes between NULs: only digits, points and NULs; none all zeros and points (nor
        # empty); none with two points; one NUL more than sizes (none inside a size)
        jq = "\x00" + "\x00".join(qs) + "\x00"
        if _SIZE_CHARS.fullmatch(jq) is None or _ZERO_SIZE.search(jq) or _TWO_POINTS.search(jq):
            return None
        if jq.count("\x00") != len(qs) + 1 or max(map(len, qs)) > 17:
            return None
        if _uniform(ps, jp):
            keys = ps
        else:
            width = max(map(len, ps))
            if width > MAX_TEXT:
                return None
            keys = ps if _same_shape(ps) else _padded(ps, width) or list(map(float, ps))
        lo = float(min(keys))
        hi = float(max(keys))
    except (ValueError, TypeError):
        return None
    return keys if lo > _HOT_MIN and hi < _HOT_MAX_PRICE else None


def _uniform(ps: list[str], jp: str) -> bool:
    """All texts of one length, each with one point at the same place (or none): their order
    is their values' order, and different texts are different values."""
    first = ps[0]
    size = len(first)
    if size > MAX_TEXT or set(map(len, ps)) != {size}:
        return False
    at = first.find(".")
    if at < 0:
        return "." not in jp
    n = len(ps)
    return jp.count(".") == n and jp[at::size].count(".") == n


def _same_shape(ps: list[str]) -> bool:
    """All texts with as many integer digits (no leading zero but a lone '0'), a fraction
    without trailing zeros or none: ordered as their values, different texts different values."""
    first = ps[0]
    whole = first.find(".")
    pattern = _SHAPES.get(len(first) if whole < 0 else whole)
    return pattern is not None and pattern.fullmatch("\x00".join(ps)) is not None


def _padded(ps: list[str], width: int) -> list[str] | None:
    """All texts with as many integer digits (no leading zero but a lone '0'), a point and
    fraction digits (trailing zeros or not): each right-padded with zeros to `width` (the
    longest), so their order is their values' order and equal keys are equal values. None when
    the texts are not all of that form."""
    whole = ps[0].find(".")
    pattern = _POINTED.get(whole)
    if pattern is None or pattern.fullmatch("\x00".join(ps)) is None:
        return None
    n = len(ps)
    return list(map(str.ljust, ps, repeat(width, n), repeat("0", n)))


def _shape(digits: int) -> re.Pattern[str]:
    one = (r"(?:0|[1-9])" if digits == 1 else rf"[1-9][0-9]{{{digits - 1}}}") + r"(?:\.[0-9]*[1-9])?"
    return re.compile(rf"{one}(?:\x00{one})*", re.ASCII)


#: `_same_shape`'s pattern per number of integer digits.
_SHAPES: Final = {d: _shape(d) for d in range(1, 16)}


def _pointed(digits: int) -> re.Pattern[str]:
    one = (r"(?:0|[1-9])" if digits == 1 else rf"[1-9][0-9]{{{digits - 1}}}") + r"\.[0-9]+"
    return re.compile(rf"{one}(?:\x00{one})*", re.ASCII)


#: `_padded`'s pattern per number of integer digits.
_POINTED: Final = {d: _pointed(d) for d in range(1, 16)}

_DIGITS: Final = re.compile(r"[0-9]*", re.ASCII)
_DIGITS_POINTS: Final = re.compile(r"[0-9.]*", re.ASCII)
_SIZE_CHARS: Final = re.compile(r"[0-9.\x00]*", re.ASCII)
_ZERO_SIZE: Final = re.compile(r"\x00[0.]*\x00", re.ASCII)
_TWO_POINTS: Final = re.compile(r"\.[0-9]*\.", re.ASCII)

#: `hot_row_seconds`' form: two plain numbers (digits, one point, at most MAX_TEXT characters)
#: and Unix seconds with six fraction digits, joined by NULs.
_PLAIN_ROW_SECONDS: Final = re.compile(
    r"[0-9]{1,20}\.[0-9]{1,19}\x00[0-9]{1,20}\.[0-9]{1,19}\x00[0-9]{10}\.[0-9]{6}", re.ASCII
)

#: Bounds for floats that prove the exact ones (MIN_MAGNITUDE, MAX_PRICE, MAX_SIZE) with margin.
_ZERO_POINT: Final = "0."
_HOT_MIN: Final = 1e-29
_HOT_MAX_PRICE: Final = 1e14
_HOT_MAX_SIZE: Final = 1e17
#: Trade ids as ints: the range `trade_id_ok` accepts.
MIN_INT_ID: Final = -(2**63)
MAX_INT_ID: Final = 2**64

#: Longest trade id kept (ids are compared for duplicates and printed; longer is garbage).
MAX_TRADE_ID: Final = 64


def trade_id_ok(value: Any) -> bool:
    """A trade id is an int or a short string (None where the exchange sends none is the caller's)."""
    t = type(value)
    return (t is int and -(2**63) <= value < 2**64) or (t is str and len(value) <= MAX_TRADE_ID)


def integer(value: Any, limit: int = 2**63) -> int | None:
    """A non-negative integer field given as a JSON int or ASCII digit text, below `limit`."""
    if type(value) is int:
        return value if 0 <= value < limit else None
    if type(value) is str and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        n = int(value)
        return n if n < limit else None
    return None


def trade_ids_ok(ids: list[Any]) -> bool:
    """`trade_id_ok` of a column (no None among them): all ints in range or all short strings."""
    kinds = set(map(type, ids))
    if kinds == _INT:
        return min(ids) >= MIN_INT_ID and max(ids) < MAX_INT_ID
    return kinds == _STR and max(map(len, ids)) <= MAX_TRADE_ID


_INT: Final = {int}
_STR: Final = {str}


# --- times ---------------------------------------------------------------------------------------


def _in_range(us: int) -> int | None:
    return us if MIN_US <= us < MAX_US else None


def us_from_ms(value: Any) -> int | None:
    """Unix milliseconds (int or digit text) to µs."""
    if type(value) is int:
        return value * US_PER_MS if MIN_US <= value * US_PER_MS < MAX_US else None
    n = integer(value)
    return None if n is None else _in_range(n * US_PER_MS)


def us_from_us(value: Any) -> int | None:
    """Unix microseconds (int or digit text)."""
    n = integer(value)
    return None if n is None else _in_range(n)


class Scaled:
    """Times as ints of a unit (`Block.clock`): a column needs no per-trade conversion."""

    __slots__ = ("unit",)

    def __init__(self, unit: int) -> None:
        self.unit = unit

    def us(self, key: int) -> int:
        return key * self.unit

    def key(self, us: int) -> int:
        """The least time key at or after `us`."""
        return -(-us // self.unit)


class IsoKeys:
    """Times as fixed-width ISO text ('2021-04-17T16:43:37.089723Z', `iso_column` checked):
    their text order is their time order, so only the times a block's bookkeeping reads are
    converted."""

    __slots__ = ()

    def us(self, key: str) -> int:
        t = us_from_iso(key)
        assert t is not None  # checked by `iso_column`
        return t

    def key(self, us: int) -> str:
        """The least time key at or after `us` (beyond the valid range: below or above all)."""
        if us < MIN_US:
            return ""
        return iso_us(us) if us < MAX_US else "~"


class DigitKeys:
    """Times as digit text of one length (`digit_keys` checked): text order is number order."""

    __slots__ = ("unit", "width")

    def __init__(self, width: int, unit: int) -> None:
        self.width = width
        self.unit = unit

    def us(self, key: str) -> int:
        return int(key) * self.unit

    def key(self, us: int) -> str:
        """The least time key at or after `us`."""
        return str(max(-(-us // self.unit), 0)).zfill(self.width)


MICROS: Final = Scaled(1)
MILLIS: Final = Scaled(US_PER_MS)
ISO: Final = IsoKeys()


def int_column(values: list[Any], clock: Scaled) -> bool:
    """Whether a column of int times (`msgspec`-typed) is in order, within [MIN_US, MAX_US)."""
    return values == sorted(values) and clock.us(values[0]) >= MIN_US and clock.us(values[-1]) < MAX_US


def iso_column(values: list[Any]) -> bool:
    """Whether a column of times is valid fixed-width ISO UTC text with µs, in order, within
    one day (so the two ends, converted, prove every date in between)."""
    first, last = values[0], values[-1]
    if type(first) is not str or type(last) is not str or first[:10] != last[:10] or values != sorted(values):
        return False
    if _ISO_DAY.fullmatch("\x00".join(values)) is None:
        return False
    return us_from_iso(first) is not None and us_from_iso(last) is not None


_ISO_ONE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"
_ISO_DAY: Final = re.compile(rf"{_ISO_ONE}(?:\x00{_ISO_ONE})*", re.ASCII)


def digit_keys(values: list[Any], unit: int) -> DigitKeys | None:
    """The clock of a column of times as digit text of one length, in order, within [MIN_US,
    MAX_US) at `unit` µs each (`us_from_us` and kin of every one), or None."""
    first = values[0]
    if type(first) is not str or set(map(len, values)) != {len(first)} or values != sorted(values):
        return None
    if not first or len(first) > 20 or _DIGITS.fullmatch("".join(values)) is None:
        return None
    clock = DigitKeys(len(first), unit)
    return clock if clock.us(first) >= MIN_US and clock.us(values[-1]) < MAX_US else None


def us_from_ns(value: Any) -> int | None:
    """Unix nanoseconds (int or digit text) to µs, truncated."""
    n = integer(value, 2**64)
    return None if n is None else _in_range(n // NS_PER_US)


def us_from_seconds(value: Any) -> int | None:
    """Unix seconds as decimal text or int ('1618678142.557535', Kraken v1) to µs, exactly
    (fractions below a µs are floored). `1e999999` and other hostile text give None."""
    if type(value) is str and len(value) == 17 and value[10] == ".":  # Kraken's 'SSSSSSSSSS.ffffff'
        joined = value[:10] + value[11:]
        if joined.isascii() and joined.isdigit():
            n = int(joined)
            return n if MIN_US <= n < MAX_US else None
    if type(value) is str and is_plain(value):  # other plain forms
        whole, _, frac = value.partition(".")
        if whole and len(whole) <= 10 and "." not in frac:
            return _in_range(int(whole) * US_PER_S + int(frac[:6].ljust(6, "0")))
    d = decimal(value)
    if d is None or not 0 < d < 4_102_444_800:
        return None
    _sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    mantissa = int("".join(map(str, digits)) or "0")
    shift = exp + 6  # digits * 10**exp seconds = digits * 10**(exp+6) µs
    us = mantissa * 10**shift if shift >= 0 else mantissa // 10**-shift
    return _in_range(us)


_ISO_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,12}))?(Z|[+-]00:?00)?", re.ASCII
)
#: 'YYYY-MM-DDTHH' prefixes already converted (exchange times come in order: a handful live).
_HOUR_CACHE: dict[str, int] = {}
_US_PER_MIN: Final = 60 * US_PER_S
#: Every valid 'MM:SS' and three-digit group, to its µs: validation and conversion in one lookup.
_MMSS: Final = {f"{m:02d}:{s:02d}": m * _US_PER_MIN + s * US_PER_S for m in range(60) for s in range(60)}
_DIGITS3: Final = {f"{i:03d}": i for i in range(1000)}


def us_from_iso(value: Any) -> int | None:
    """'2021-04-17T16:43:37.089723Z' (UTC; any number of fraction digits, truncated to µs) to µs."""
    if type(value) is not str:
        return None
    # fast path: the fixed-width form every exchange here sends, with the hour prefix cached
    if len(value) == 27 and value[26] == "Z" and value[19] == "." and value[13] == ":":
        base = _HOUR_CACHE.get(value[:13])
        if base is not None:
            mmss = _MMSS.get(value[14:19])
            ms = _DIGITS3.get(value[20:23])
            us_ = _DIGITS3.get(value[23:26])
            if mmss is not None and ms is not None and us_ is not None:
                return base + mmss + ms * US_PER_MS + us_  # cached hours are in range
    m = _ISO_RE.fullmatch(value)
    if m is None:
        return None
    day, hh, mm, ss, frac, _ = m.groups()
    try:
        minute = datetime.fromisoformat(f"{day}T{hh}:{mm}:00+00:00")
    except ValueError:
        return None
    if int(ss) >= 60:
        return None
    base = (minute - _EPOCH) // _ONE_US
    if not MIN_US <= base < MAX_US - 60 * US_PER_S:
        return None
    hour = base - int(mm) * _US_PER_MIN
    if MIN_US <= hour < MAX_US - 3600 * US_PER_S:  # only hours inside 2000-2100 are cached
        if len(_HOUR_CACHE) > 4096:
            _HOUR_CACHE.clear()
        _HOUR_CACHE[f"{day}T{hh}"] = hour
    return _in_range(base + int(ss) * US_PER_S + int((frac or "")[:6].ljust(6, "0")))


def iso_us(us: int) -> str:
    """ISO-8601 UTC with microseconds and a Z, the time format of every output."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def us_from_datetime(t: datetime) -> int:
    return (t - _EPOCH) // _ONE_US


def datetime_from_us(us: int) -> datetime:
    if not us % US_PER_S:  # whole seconds (every bar time): the C constructor, a third of the cost
        return datetime.fromtimestamp(us // US_PER_S, UTC)
    return _EPOCH + timedelta(microseconds=us)


def us_from_clock(seconds: float) -> int:
    """A clock reading (float seconds, e.g. time.time()) to µs."""
    return int(seconds * US_PER_S)


def seconds(us: int) -> int:
    """µs to whole Unix seconds (floor)."""
    return us // US_PER_S


def us(whole_seconds: int | float) -> int:
    """Whole (or float) seconds to µs, for durations and bar steps."""
    return int(whole_seconds * US_PER_S)


def number_text(d: Decimal) -> str:
    """A Decimal as JSON number text or plain decimal string (exact; no exponent)."""
    return format(d, "f")
