"""Exchange feeds: one sans-I/O module per exchange plus the connection, backfill and simulator shells.

`PROTOCOLS` maps an exchange name to its protocol object; adding an exchange is one module here
and one line in this mapping.
"""

from __future__ import annotations

from daemon.feeds import binance, bitstamp, coinbase, kraken, poloniex
from daemon.feeds.base import ExchangeProtocol

PROTOCOLS: dict[str, ExchangeProtocol] = {
    m.PROTOCOL.name: m.PROTOCOL for m in (coinbase, binance, kraken, bitstamp, poloniex)
}


def protocol(name: str) -> ExchangeProtocol:
    """The protocol of a named exchange; an unknown name is an input error listing the known ones."""
    from db.errors import InputError

    try:
        return PROTOCOLS[name.lower()]
    except KeyError:
        raise InputError(f"unknown exchange {name!r}; known: {', '.join(PROTOCOLS)}") from None
