"""Synthetic bars for the demo and the simulator: reproducible random walks, exact 2-decimal prices.

With `momentum` > 0 each bar's return carries that share of the previous one (AR(1) returns),
a pattern a trained model can learn and persistence cannot: the demo shows a model earning its
promotion honestly instead of tying persistence on pure noise.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta
from decimal import Decimal

from db.records import Bar, interval_seconds


def random_walk_bars(
    symbol: str,
    n: int,
    *,
    start: datetime,
    interval: str = "5m",
    seed: int = 7,
    price: Decimal = Decimal("30000.00"),
    momentum: float = 0.0,
) -> list[Bar]:
    """A synthetic, reproducible OHLCV series (random-walk closes, exact 2-decimal prices)."""
    rnd = random.Random(seed)
    step = timedelta(seconds=interval_seconds(interval))
    cent = Decimal("0.01")
    bars = []
    close = price
    last_return = 0.0
    for i in range(n):
        o = close
        path = [o]
        for k in range(4):
            drift = momentum * last_return if k == 0 else 0.0
            path.append(max(cent, (path[-1] * Decimal(1 + drift + rnd.gauss(0, 0.0012))).quantize(cent)))
        c = path[-1]
        last_return = float(c / o) - 1.0
        volume = Decimal(rnd.randint(0, 5_000_000_000)).scaleb(-8)
        if volume == 0:
            o = c = close
            path = [close]
        bars.append(Bar("sim", symbol, interval, start + i * step, o, max(path), min(path), c, volume))
        close = c
    return bars


def walk_seed(symbol: str, seed: int) -> int:
    """A per-symbol seed, so many symbols walk independently but reproducibly."""
    digest = hashlib.blake2b(f"{seed}:{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
