"""Hostile frames for every exchange, mutated from real traffic; the oracle that judges a parse.

Seeds are the real captures in ../shared/captures (Bitstamp has none: its seeds are the frames
its own module renders, the same ones the simulator sends), plus rendered trade frames for every
exchange so each has trades to attack. Mutations: byte flips, truncation, type swaps, hostile
numbers (huge, negative, NaN/Infinity text, giant exponents, unicode digits, 1e999999 times),
deep nesting, 1 MiB strings, wrong channels/types and frames with very many trades.

Shared by `tests/daemon/test_feeds_fuzz.py` (CI size) and `bench/feed_fuzz.py` (full size).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from daemon.feeds import PROTOCOLS
from daemon.feeds.base import ExchangeProtocol, ParseResult, SimState, Trade
from daemon.feeds.capture import read_capture
from daemon.feeds.simulator import synth_trades
from db.csvbars import read_bars_csv
from db.records import Bar

CAPTURES = {
    "coinbase": "COINBASE.ws.28.0",
    "binance": "BINANCE.ws.1.0",
    "kraken": "KRAKEN.ws.48.0",
    "poloniex": "POLONIEX.ws.1.0",
}

HOSTILE_NUMBERS: tuple[Any, ...] = (
    "1e999999",
    "-1e999999",
    "1E+999999999",
    "1e-999999",
    "NaN",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "-1",
    "-0",
    "0",
    "0.0",
    "-0.00000001",
    "1e30",
    "1e-40",
    "9" * 400,
    "0." + "0" * 300 + "1",
    "1_000",
    "١٢٣",
    "²",
    " 1",
    "1 ",
    "0x10",
    "1e",
    ".",
    "",
    "+1",
    "--1",
    "1.2.3",
    "1e+",
    "12345678901234567890123456789012",
    10**30,
    -(10**18),
    2**63,
    -1,
    0,
    1e308,
    -1e308,
    1.5,
    True,
    None,
    [],
    {},
)
HOSTILE_TIMES: tuple[Any, ...] = (
    "1e999999",
    "9" * 40,
    "-1",
    "0",
    "1e18",
    "NaN",
    "",
    "2021-13-45T99:99:99Z",
    "9999-12-31T23:59:59Z",
    "1618678142.5575351e999999",
    "0000-00-00T00:00:00Z",
    "2021-04-17T16:43:37.089723+05:00",
    10**20,
    -(10**12),
    0,
    2**63 - 1,
    1.5e300,
    True,
    None,
)


@dataclass(frozen=True, slots=True)
class Frame:
    text: str
    mutation: str
    #: the mutation certainly made any trade in it invalid (a hostile value in a trade field)
    poisoned: bool = False


def seed_bars(shared: Path) -> list[Bar]:
    """The real 5m bars whose rendered trades seed every exchange's frames."""
    return read_bars_csv(
        shared / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv", exchange="x", symbol="BTC-USDT", interval="5m"
    )[:200]


def seed_frames(shared: Path, exchange: str, bars: list[Bar]) -> list[str]:
    proto = PROTOCOLS[exchange]
    out: list[str] = []
    if exchange in CAPTURES:
        out.extend(r.raw for r in read_capture(shared / "captures" / CAPTURES[exchange]))
    native = proto.native_symbol("BTC-USDT")
    state = SimState(now_us=1_608_000_000_000_000)
    out.extend(proto.render_trade(t, state) for t in synth_trades(exchange, "BTC-USDT", native, bars[:50]))
    out.extend(proto.render_server_heartbeat([native], state))
    out.append(proto.render_malformed())
    return out


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):
            yield from _paths(v, (*prefix, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return doc


#: Keys that carry a trade's price, size, time, side, id or symbol in some exchange's dialect.
_TRADE_FIELDS = {
    "price": "n",
    "size": "n",
    "p": "n",
    "q": "n",
    "qty": "n",
    "quantity": "n",
    "price_str": "n",
    "amount_str": "n",
    "time": "t",
    "T": "t",
    "timestamp": "t",
    "createTime": "t",
    "microtimestamp": "t",
}


def _enc(doc: Any) -> str:
    # orjson refuses ints beyond 64 bits; render those (and NaN/inf floats) by hand like a hostile peer would
    try:
        return orjson.dumps(doc).decode()
    except (TypeError, orjson.JSONEncodeError):
        import json

        return json.dumps(doc, default=str)


class Mutator:
    """Deterministic hostile frames from seeds (same seed number -> same frames)."""

    def __init__(self, exchange: str, seeds: list[str], seed: int = 0) -> None:
        self.exchange = exchange
        self.proto: ExchangeProtocol = PROTOCOLS[exchange]
        self.seeds = seeds
        self.docs = [d for d in (self._load(s) for s in seeds) if d is not None]
        self.trade_seeds = [s for s in seeds if self.proto.parse(s).trades]
        self.rnd = random.Random(f"{exchange}:{seed}")
        self.channels = sorted(
            {
                str(v)
                for d in self.docs
                if isinstance(d, dict)
                for k, v in d.items()
                if k in ("type", "channel", "event", "e", "method", "stream") and isinstance(v, str)
            }
        ) or ["trade"]

    @staticmethod
    def _load(text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return None

    def frames(self, n: int) -> Iterator[Frame]:
        kinds = (
            (self.byte_flip, 20),
            (self.truncate, 10),
            (self.type_swap, 20),
            (self.hostile_number, 25),
            (self.wrong_channel, 8),
            (self.deep_nesting, 3),
            (self.huge_string, 2),
            (self.many_trades, 2),
            (self.splice, 10),
        )
        funcs = [f for f, _ in kinds]
        weights = [w for _, w in kinds]
        for _ in range(n):
            yield self.rnd.choices(funcs, weights)[0]()

    # --- mutations -------------------------------------------------------------------------------
    def _seed(self, trades: bool = False) -> str:
        pool = self.trade_seeds if trades and self.trade_seeds and self.rnd.random() < 0.7 else self.seeds
        return self.rnd.choice(pool)

    def byte_flip(self) -> Frame:
        b = bytearray(self._seed(trades=True).encode())
        for _ in range(self.rnd.randint(1, 4)):
            i = self.rnd.randrange(len(b))
            b[i] = self.rnd.choice((self.rnd.randrange(256), ord(self.rnd.choice('{}[]",:0123456789e-.'))))
        return Frame(b.decode("utf-8", "replace"), "byte_flip")

    def truncate(self) -> Frame:
        s = self._seed(trades=True)
        return Frame(s[: self.rnd.randrange(len(s))], "truncate")

    def _doc(self) -> Any:
        s = self._seed(trades=True)
        return self._load(s) if self._load(s) is not None else self._load(self.rnd.choice(self.seeds))

    def type_swap(self) -> Frame:
        doc = self._doc()
        paths = list(_paths(doc))
        path, _ = self.rnd.choice(paths)
        value = self.rnd.choice((None, True, 0, -1, 1.5, "x", "", [], {}, [1, 2], {"a": 1}, "trade", 10**25))
        return Frame(_enc(_set(doc, path, value)), "type_swap")

    def hostile_number(self) -> Frame:
        doc = self._doc()
        targets = [(p, v) for p, v in _paths(doc) if p and isinstance(p[-1], str) and p[-1] in _TRADE_FIELDS]
        arrays = [(p, v) for p, v in _paths(doc) if p and isinstance(p[-1], int) and len(p) >= 2]
        if targets and self.rnd.random() < 0.8:
            path, _ = self.rnd.choice(targets)
            pool = HOSTILE_TIMES if _TRADE_FIELDS[path[-1]] == "t" else HOSTILE_NUMBERS
            value = self.rnd.choice(pool)
            poisoned = _poisons(self.exchange, path[-1], value)
            return Frame(_enc(_set(doc, path, value)), "hostile_number", poisoned=poisoned)
        if arrays:  # Kraken v1 arrays: [price, volume, time, side, ...]
            path, _ = self.rnd.choice(arrays)
            value = self.rnd.choice(HOSTILE_NUMBERS + HOSTILE_TIMES)
            return Frame(_enc(_set(doc, path, value)), "hostile_number")
        return self.type_swap()

    def wrong_channel(self) -> Frame:
        doc = self._doc()
        if isinstance(doc, dict):
            keys = [k for k in ("type", "channel", "event", "e", "method", "stream") if k in doc]
            if keys:
                doc[self.rnd.choice(keys)] = self.rnd.choice([*self.channels, "nope", "match", "trade", "trades"])
                return Frame(_enc(doc), "wrong_channel")
        if isinstance(doc, list) and len(doc) >= 2:
            doc[-2] = self.rnd.choice(("book-10", "ticker", "spread", "trade", "x"))
            return Frame(_enc(doc), "wrong_channel")
        return self.type_swap()

    def deep_nesting(self) -> Frame:
        depth = self.rnd.choice((100, 1000, 5000, 100_000))
        doc = self._doc()
        nest = "[" * depth + "1" + "]" * depth
        if isinstance(doc, dict) and doc:
            key = self.rnd.choice(list(doc))
            s = _enc({**doc, key: None}).replace(_enc(key) + ":null", _enc(key) + ":" + nest, 1)
            return Frame(s, "deep_nesting")
        return Frame(nest, "deep_nesting")

    def huge_string(self) -> Frame:
        doc = self._doc()
        size = self.rnd.choice((1 << 20, 256 << 10, 1 << 16))
        targets = [p for p, v in _paths(doc) if p and isinstance(v, str)]
        if targets:
            return Frame(_enc(_set(doc, self.rnd.choice(targets), "9" * size)), "huge_string")
        return Frame('"' + "a" * size + '"', "huge_string")

    def many_trades(self) -> Frame:
        s = self.rnd.choice(self.trade_seeds or self.seeds)
        doc = self._load(s)
        n = self.rnd.choice((100, 1000, 10_000, 50_000))
        if isinstance(doc, dict) and isinstance(doc.get("data"), list) and doc["data"]:
            doc["data"] = doc["data"] * (n // len(doc["data"]))
            return Frame(_enc(doc), "many_trades")
        if isinstance(doc, list) and len(doc) >= 4 and isinstance(doc[1], list) and doc[1]:
            doc[1] = doc[1] * (n // len(doc[1]))
            return Frame(_enc(doc), "many_trades")
        return Frame("[" + ",".join([s] * min(n, 2000)) + "]", "many_trades")

    def splice(self) -> Frame:
        a, b = self._seed(trades=True), self.rnd.choice(self.seeds)
        i, j = self.rnd.randrange(len(a)), self.rnd.randrange(len(b))
        return Frame(a[:i] + b[j:], "splice")


#: Fields an exchange sends but its parser (rightly) ignores: Bitstamp's float `price`/`amount`
#: beside the exact strings, and its seconds `timestamp` beside `microtimestamp`.
_IGNORED = {"bitstamp": {"price", "timestamp"}}


def _poisons(exchange: str, key: str, value: Any) -> bool:
    """A hostile value certainly makes the trade invalid (anything a parser must reject)."""
    if key in _IGNORED.get(exchange, ()):
        return False
    if exchange == "kraken" and value == 1.5 and type(value) is float:
        return False  # Kraken v2 sends prices and sizes as JSON numbers: 1.5 is a fine one
    if _TRADE_FIELDS[key] == "t":
        return True  # every HOSTILE_TIMES value is impossible or not a time
    return True  # every HOSTILE value, zero sizes included (a trade of nothing is invalid)


# --- the oracle ----------------------------------------------------------------------------------

MAX_PRICE = Decimal(10) ** 15
MAX_SIZE = Decimal(10) ** 18
MIN_US = 946_684_800_000_000  # 2000-01-01
MAX_US = 4_102_444_800_000_000  # 2100-01-01


def trade_problem(t: Trade, exchange: str) -> str | None:
    """Why a parsed trade is not a valid trade (None: it is): the judge of 'no trade from invalid input'."""
    if t.exchange != exchange:
        return "exchange"
    if not isinstance(t.price, Decimal) or not t.price.is_finite() or not 0 < t.price < MAX_PRICE:
        return "price"
    if not isinstance(t.size, Decimal) or not t.size.is_finite() or not 0 < t.size < MAX_SIZE:
        return "size"
    if t.price.as_tuple().exponent < -30 or t.size.as_tuple().exponent < -30:  # type: ignore[operator]
        return "precision"
    if not isinstance(t.time_us, int) or not MIN_US <= t.time_us < MAX_US:
        return "time"
    if t.side not in ("buy", "sell", None):
        return "side"
    base, sep, quote = t.symbol.partition("-")
    if not (sep and base and quote) or len(t.symbol) > 40 or not t.symbol.isascii():
        return "symbol"
    if t.trade_id is not None and len(t.trade_id) > 64:
        return "trade_id"
    return None


@dataclass
class FuzzReport:
    exchange: str
    frames: int = 0
    escapes: int = 0
    bad_trades: int = 0
    poisoned_trades: int = 0
    trades: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    uncounted: int = 0
    slowest_s: float = 0.0
    slowest_mutation: str = ""
    over_20ms: int = 0
    examples: list[str] = field(default_factory=list)
    #: the slowest frames of the pass (seconds, frame), slowest first, for re-timing
    slowest: list[tuple[float, Frame]] = field(default_factory=list)

    def retime(self, repeat: int = 5) -> list[tuple[float, Frame]]:
        """Best-of-`repeat` parse time of the slowest frames: their cost, without the page faults,
        GC pauses and neighbours' load that a single pass on a shared machine also measures."""
        proto = PROTOCOLS[self.exchange]
        out = []
        for _, fr in self.slowest:
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                proto.parse(fr.text)
                best = min(best, time.perf_counter() - t0)
            out.append((best, fr))
        return sorted(out, key=lambda x: -x[0])


def fuzz(exchange: str, frames: Iterator[Frame]) -> FuzzReport:
    proto = PROTOCOLS[exchange]
    rep = FuzzReport(exchange)
    clock = time.perf_counter
    for fr in frames:
        rep.frames += 1
        rep.mutations[fr.mutation] += 1
        t0 = clock()
        try:
            res: ParseResult = proto.parse(fr.text)
        except BaseException as exc:  # what the test is for: nothing may escape
            rep.escapes += 1
            if len(rep.examples) < 5:
                rep.examples.append(f"escape {type(exc).__name__}: {fr.mutation} {fr.text[:160]!r}")
            continue
        dt = clock() - t0
        if dt > rep.slowest_s:
            rep.slowest_s, rep.slowest_mutation = dt, fr.mutation
        if dt > 0.020:
            rep.over_20ms += 1
        if len(rep.slowest) < 10 or dt > rep.slowest[-1][0]:
            rep.slowest.append((dt, fr))
            rep.slowest.sort(key=lambda x: -x[0])
            del rep.slowest[10:]
        rep.kinds[res.kind] += 1
        if res.kind == "malformed":
            if res.reason:
                rep.reasons[res.reason] += 1
            else:
                rep.uncounted += 1
        for t in res.trades:
            rep.trades += 1
            problem = trade_problem(t, exchange)
            if problem is not None:
                rep.bad_trades += 1
                if len(rep.examples) < 5:
                    rep.examples.append(f"bad trade ({problem}) from {fr.mutation}: {t!r}"[:300])
        if fr.poisoned and res.trades and res.kind == "trade":
            rep.poisoned_trades += 1
            if len(rep.examples) < 5:
                rep.examples.append(f"trade from poisoned frame: {fr.text[:200]!r}")
    return rep
