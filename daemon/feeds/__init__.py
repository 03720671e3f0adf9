"""Exchange feeds: one sans-I/O module per exchange plus the connection, backfill and simulator shells.

`PROTOCOLS` maps an exchange name to its protocol object; adding an exchange is one module here
and one line in this mapping.
"""

from __future__ import annotations

from daemon.feeds import binance, bitstamp, coinbase, kraken, poloniex
from daemon.feeds.base import ExchangeProtocol
from db.errors import InputError
from db.records import SeriesKey

PROTOCOLS: dict[str, ExchangeProtocol] = {
    m.PROTOCOL.name: m.PROTOCOL for m in (coinbase, binance, kraken, bitstamp, poloniex)
}


def protocol(name: str) -> ExchangeProtocol:
    """The protocol of a named exchange; an unknown name is an input error listing the known ones."""
    try:
        return PROTOCOLS[name.lower()]
    except KeyError:
        raise InputError(f"unknown exchange {name!r}; known: {', '.join(PROTOCOLS)}") from None


def series_key(text: str) -> SeriesKey:
    """`EXCHANGE:SYMBOL[:INTERVAL]` of an exchange barcast speaks: the CLI's `--series` and the API's
    `series` both, so a typo such as `coinbse:BTC-USD` is an error naming the valid exchanges in
    either, never an empty answer (or a stream that waits forever)."""
    key = SeriesKey.parse(text)
    if key.exchange not in PROTOCOLS:
        raise InputError(f"unknown exchange {key.exchange!r} in {text!r} (valid: {', '.join(sorted(PROTOCOLS))})")
    return key
