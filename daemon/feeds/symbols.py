"""Symbol mapping as data: how each exchange spells a pair, and back to BASE-QUOTE.

An exchange module declares a `SymbolFormat` (separator, letter case, currency aliases); the
conversions are the same code for all. Concatenated symbols (BTCUSDT) are split at the longest
known quote currency in `QUOTES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from daemon.feeds.records import BadMessage

#: Quote currencies recognised at the end of concatenated symbols (BTCUSDT, btcusd), longest first.
QUOTES: tuple[str, ...] = tuple(
    sorted(
        ("USDT", "USDC", "BUSD", "TUSD", "FDUSD", "USDP", "DAI", "USD", "EUR", "GBP", "JPY", "AUD", "CAD", "CHF",
         "TRY", "BRL", "BTC", "ETH", "BNB", "PAX", "XBT"),
        key=len,
        reverse=True,
    )
)
#: Longest native symbol considered; anything longer is garbage, never looked up or cached.
MAX_SYMBOL = 32


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


@dataclass(frozen=True)
class SymbolFormat:
    """How one exchange writes BASE-QUOTE: `sep` between them ("" = concatenated), letter case,
    and currency aliases (Kraken's XBT for BTC)."""

    sep: str
    case: Literal["upper", "lower"] = "upper"
    #: exchange spelling -> normal spelling (XBT -> BTC)
    aliases: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def native(self, symbol: str) -> str:
        """BTC-USD -> this exchange's spelling (the websocket's; REST spellings live in the module)."""
        base, quote = split_normal(symbol)
        text = f"{base}{self.sep}{quote}"
        return text.lower() if self.case == "lower" else text

    def normal(self, native: str) -> str:
        """This exchange's spelling -> BASE-QUOTE; raises BadMessage for garbage. Cached."""
        hit = self._cache.get(native) if type(native) is str else None
        if hit is not None:
            return hit
        if type(native) is not str or not 0 < len(native) <= MAX_SYMBOL or not native.isascii():
            raise BadMessage("bad_symbol")
        base, quote = split_separated(native, self.sep) if self.sep else split_concat(native)
        if not (base.isalnum() and quote.isalnum()):
            raise BadMessage("bad_symbol")
        a = self.aliases
        out = f"{a.get(base, base)}-{a.get(quote, quote)}"
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[native] = out
        return out
