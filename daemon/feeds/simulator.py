"""A local exchange: one exchange module's websocket protocol and REST candles, from OHLCV bars.

Every message goes through the same exchange module the daemon parses with (`render_*`), so the
simulator and the parser cannot drift apart. Bars keep their real timestamps; the simulator's clock
starts at `start` (default: the first bar) and runs `speed` times real time.

Trades per bar (see `synth_trades`), chosen so that aggregation reproduces the bar exactly:
- volume > 0, `per_bar` = N > 4 (a realistic density; real BTCUSDT has hundreds to thousands of
  trades per 5m bar) and the volume has at least N units of its last digit: N trades spread
  evenly inside the interval, the first at the open, the last at the close, the high at N/3 and
  the low at 2N/3, the rest priced strictly between low and high; sizes at the volume's own
  exponent summing exactly to it (so the stored volume has the CSV's text);
- volume > 0 otherwise (the default, sparse rendering): four trades at 10%, 30%, 50% and 70% of
  the interval, priced open, high, low, close, whose sizes split the volume exactly (in units one
  or more decimal places below the volume's own, so no size is zero and they sum to the volume
  with no rounding);
- volume 0: no trades at all (a trade of nothing is invalid, and the parsers count one as
  malformed). When O=H=L=C equals the previous bar's close (contiguous), the aggregator's flat bar
  is exactly that bar: this is what real zero-volume bars look like, every one of them in
  ../shared/data. Any other volume-0 bar (first bar, after a gap, or flat at a new price, which
  real data never has) no trade can tell; REST candles (the backfill) still serve it.

Gaps (intervals missing from every series) are exchange outages: at the gap the simulator drops
all websocket connections and refuses new ones (HTTP 503) until the gap ends; REST answers for the
gap with no candles. So gaps stay gaps.

REST serves, for each series, the candles that have closed by the simulator's clock (including
the history before `start`), with the synthetic trade count.

After the last bar (plus `END_MARGIN_S`) the exchange goes down the same way, for good.

Symbols it does not serve are unknown to it, refused as the real exchange refuses them
(`ExchangeProtocol.render_subscribe`: Coinbase refuses the whole subscribe naming the product,
Kraken refuses the symbol, Poloniex the request naming nothing; Binance and Bitstamp acknowledge
it and stay silent) and answered on REST with the exchange's "unknown symbol" error
(`render_rest_unknown`). `unlist` and `list_symbol` take a served symbol off and back.

Faults: `drop_every_s` closes each connection that long after it opened; `refuse` refuses that many
connection attempts; `malformed_every` sends a malformed message before every Nth trade;
`stall_after_s` stops sending anything on a connection that long after it opened (it stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from daemon.feeds.base import Candle, ExchangeProtocol, SimState, Trade
from daemon.feeds.fields import US_PER_S, us, us_from_clock
from db.errors import BarcastError
from db.records import Bar, interval_seconds, to_unix

log = logging.getLogger("barcast.sim")

_FRACTIONS = (1, 3, 5, 7)
#: Simulated seconds after the last bar's end before the exchange goes down (lets it close).
END_MARGIN_S = 30.0  # tenths of the interval at which open, high, low, close trade


class SimClock:
    """Simulated exchange time: `start` plus `speed` times the wall time since `reset()`.

    `hold` is the time of the next event the simulator has not published yet: the clock never
    passes it. When the machine is too slow for the speed asked, simulated time slows down
    instead of running ahead of what was sent (which would make clients close bars whose trades
    are still to come).
    """

    def __init__(self, start: float, speed: float) -> None:
        self.start = start
        self.speed = speed
        self.hold: float | None = None
        self._t0 = time.monotonic()

    def reset(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        mono = time.monotonic()
        t = self.start + (mono - self._t0) * self.speed
        if self.hold is not None and t > self.hold:
            self._t0 = mono - (self.hold - self.start) / self.speed  # time stops here, then runs on
            return self.hold
        return t

    def now_us(self) -> int:
        return us_from_clock(self.now())

    def wall_delay(self, t: float) -> float:
        return (t - self.now()) / self.speed


@dataclass(frozen=True, slots=True)
class SimSeries:
    """One symbol the simulated exchange trades: normalised symbol and its bars (one interval)."""

    symbol: str
    bars: tuple[Bar, ...]


@dataclass(frozen=True, slots=True)
class Faults:
    drop_every_s: float | None = None
    refuse: int = 0
    malformed_every: int | None = None
    stall_after_s: float | None = None
    #: never acknowledge a subscription (trades still flow): the client must time out waiting
    silent_subscribe: bool = False


def _split_volume(volume: Decimal, parts: int) -> list[Decimal]:
    """`parts` positive sizes summing exactly to `volume` (> 0)."""
    exp = volume.as_tuple().exponent
    assert isinstance(exp, int)
    unit = Decimal(1).scaleb(exp)
    units = int(volume.scaleb(-exp))
    while units < parts * 10:
        unit = unit.scaleb(-1)
        units *= 10
    each = units // parts
    sizes = [each] * (parts - 1) + [units - each * (parts - 1)]
    return [(unit * s).normalize() if s else Decimal(0) for s in sizes]


#: Trades per bar of the sparse rendering (open, high, low, close).
SPARSE = 4


def _dense_sizes(volume: Decimal, parts: int) -> list[Decimal] | None:
    """`parts` positive sizes at the volume's own exponent summing exactly to it (so the exact
    sum has the volume's text), uneven as real trades are (weights 1..97), or None when the
    volume has fewer units than `parts`."""
    exp = volume.as_tuple().exponent
    assert isinstance(exp, int)
    units = int(volume.scaleb(-exp))
    if units < parts:
        return None
    weights = [1 + (k * 7919) % 97 for k in range(parts)]
    total = sum(weights)
    # at >= 2 units per weight every share is positive, the last one too; else equal shares
    shares = [units * w // total for w in weights[:-1]] if units >= 2 * total else [units // parts] * (parts - 1)
    return [Decimal(x).scaleb(exp) for x in shares] + [Decimal(units - sum(shares)).scaleb(exp)]


def _dense_prices(bar: Bar, n: int) -> list[Decimal]:
    """Open first, close last, high at n//3, low at 2n//3; the rest strictly inside (low, high)
    where the range allows (never a new extreme), else the open again (never first at anything)."""
    exp = min(int(x.as_tuple().exponent) for x in (bar.open, bar.high, bar.low, bar.close))
    lo = int(bar.low.scaleb(-exp))
    span = int(bar.high.scaleb(-exp)) - lo - 1  # units strictly between low and high
    prices = [Decimal(lo + 1 + (k * 7919) % span).scaleb(exp) if span > 0 else bar.open for k in range(n)]
    prices[0], prices[n // 3], prices[2 * n // 3], prices[-1] = bar.open, bar.high, bar.low, bar.close
    return prices


def _bar_trades(bar: Bar, per_bar: int) -> list[tuple[int, Decimal, Decimal, str]]:
    """(µs after the bar's open, price, size, side) of one bar's trades (module docstring)."""
    step = interval_seconds(bar.interval)
    if bar.volume > 0:
        dense = _dense_sizes(bar.volume, per_bar) if per_bar > SPARSE else None
        if dense is not None:
            step_us = us(step)
            n = len(dense)
            sides = ("buy", "sell") * (n // 2 + 1)
            return list(
                zip([step_us * (k + 1) // (n + 1) for k in range(n)], _dense_prices(bar, n), dense, sides, strict=False)
            )
        sizes = _split_volume(bar.volume, SPARSE)
    else:
        return []
    return [
        (step * 100_000 * frac, px, sz, side)
        for frac, px, sz, side in zip(
            _FRACTIONS, (bar.open, bar.high, bar.low, bar.close), sizes, ("buy", "buy", "sell", "sell"), strict=True
        )
    ]


def synth_trades(
    exchange: str, symbol: str, native: str, bars: Sequence[Bar], *, first_id: int = 1, per_bar: int = SPARSE
) -> Iterator[Trade]:
    """Trades whose aggregation is exactly `bars` (rules in the module docstring). `per_bar` >
    4: that many trades per bar with volume, where its units allow (a realistic density)."""
    tid = first_id
    for bar in bars:
        start_us = us(to_unix(bar.open_time))
        for offset, px, sz, side in _bar_trades(bar, per_bar):
            yield Trade(exchange, symbol, native, str(tid), start_us + offset, px, sz, side)  # type: ignore[arg-type]
            tid += 1


def synth_trade_count(bars: Sequence[Bar], per_bar: int = SPARSE) -> dict[int, int]:
    """Trade count per bar open time (Unix s) that `synth_trades` produces."""
    return {to_unix(bar.open_time): len(_bar_trades(bar, per_bar)) for bar in bars}


@dataclass(slots=True)
class _Client:
    ws: ServerConnection
    opened: float
    natives: set[str] = field(default_factory=set)
    stalled: bool = False


class ExchangeSimulator:
    """Serve `series` over `protocol` on 127.0.0.1:`port` (0: a free port) until `stop()`."""

    def __init__(
        self,
        protocol: ExchangeProtocol,
        series: Sequence[SimSeries],
        *,
        speed: float = 1.0,
        start: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_s: float = 1.0,
        faults: Faults | None = None,
        trades_per_bar: int = SPARSE,
        trades_per_frame: int = 1,
    ) -> None:
        if not series or not all(s.bars for s in series):
            raise ValueError("the simulator needs at least one series with bars")
        if trades_per_frame < 1:
            raise ValueError(f"trades_per_frame must be >= 1, not {trades_per_frame}")
        if trades_per_frame > 1 and not protocol.bundles_trades:
            raise ValueError(f"trades_per_frame={trades_per_frame}: {protocol.name} sends one trade a frame")
        self.protocol = protocol
        self.series = list(series)
        self.interval_s = interval_seconds(series[0].bars[0].interval)
        first = min(to_unix(s.bars[0].open_time) for s in series)
        self.clock = SimClock(float(start if start is not None else first), speed)
        self.host = host
        self.port = port
        self.heartbeat_s = heartbeat_s
        self.faults = faults or Faults()
        self.trades_per_bar = trades_per_bar
        #: up to this many trades of one symbol and bar in a frame, as busy markets send them
        self.trades_per_frame = trades_per_frame
        self.natives = {protocol.native_symbol(s.symbol): s for s in series}
        #: served natives the exchange does not list now (refused, no trades, REST error)
        self.unlisted: set[str] = set()
        #: subscribe requests answered with a refusal of some of their symbols
        self.refusals = 0
        self._candles: dict[str, list[Candle]] = {}
        self._candle_times: dict[str, list[int]] = {}
        for native, s in self.natives.items():
            counts = synth_trade_count(s.bars, trades_per_bar)
            cs = [
                Candle(to_unix(b.open_time), b.open, b.high, b.low, b.close, b.volume, counts[to_unix(b.open_time)])
                for b in s.bars
            ]
            self._candles[native] = cs
            self._candle_times[native] = [c.open_time for c in cs]
        self._outages = self._find_outages()
        self._clients: dict[ServerConnection, _Client] = {}
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._down_until = 0.0
        self._refused = 0
        self.sent_trades = 0
        self.connections = 0
        self.finished = asyncio.Event()
        self._sequence = 0
        self._last_trade_id = 0

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.protocol.ws_path}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def end_time(self) -> int:
        """Unix seconds when the last bar of the data ends."""
        return max(to_unix(s.bars[-1].open_time) for s in self.series) + self.interval_s

    async def start(self) -> None:
        try:
            self._server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                ping_interval=20,
                ping_timeout=20,
                compression=None,
                max_queue=None,
            )
        except OSError as exc:  # the port is taken, the host is not this machine's
            raise BarcastError(
                f"exchange simulator: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self.clock.reset()
        self._tasks = [asyncio.create_task(self._play()), asyncio.create_task(self._heartbeats())]
        log.info(
            "exchange simulator serving",
            extra={"protocol": self.protocol.name, "ws": self.ws_url, "rest": self.rest_url, "speed": self.clock.speed},
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> ExchangeSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def unlist(self, symbol: str) -> None:
        """Stop listing `symbol` (normalised): new subscriptions to it are refused, REST errs."""
        self.unlisted.add(self.protocol.native_symbol(symbol))

    def list_symbol(self, symbol: str) -> None:
        """List `symbol` (normalised) again."""
        self.unlisted.discard(self.protocol.native_symbol(symbol))

    def _unknown(self, native: str) -> bool:
        return native not in self.natives or native in self.unlisted

    def drop_all(self) -> None:
        """Close every client connection now (tests and outages)."""
        for c in list(self._clients.values()):
            self._tasks.append(asyncio.create_task(c.ws.close(1012, "simulated outage")))

    # --- data ----------------------------------------------------------------------------------
    def _find_outages(self) -> list[tuple[int, int]]:
        """[start, end) spans where no series has a bar: the exchange was down."""
        times = sorted({to_unix(b.open_time) for s in self.series for b in s.bars})
        step = self.interval_s
        return [(a + step, b) for a, b in itertools.pairwise(times) if b - a > step]

    def _down(self, t: float) -> bool:
        return t < self._down_until

    def candles(self, native: str, start: int | None, end: int | None, limit: int) -> list[Candle]:
        """Closed candles (by the simulator's clock) opening in [start, end), oldest first."""
        cs = self._candles.get(native, [])
        times = self._candle_times.get(native, [])
        closed_before = self.clock.now() - self.interval_s
        lo = bisect_left(times, start) if start is not None else 0
        out: list[Candle] = []
        for c in cs[lo:]:
            if (end is not None and c.open_time >= end) or c.open_time > closed_before or len(out) >= limit:
                break
            out.append(c)
        return out

    # --- HTTP: REST candles and connection refusal --------------------------------------------
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if url.path.rstrip("/") != self.protocol.ws_path.rstrip("/"):
                return conn.respond(404, "no websocket here\n")
            if self._refused < self.faults.refuse:
                self._refused += 1
                return conn.respond(503, "refused (simulated)\n")
            if self._down(self.clock.now()):
                return conn.respond(503, "exchange down (simulated outage)\n")
            return None
        query = dict(parse_qsl(url.query))
        try:
            q = self.protocol.candle_query(url.path, query)
        except (KeyError, ValueError) as exc:
            return conn.respond(400, f"bad candles request: {exc}\n")
        if q is None:
            return conn.respond(404, "not found\n")
        if self._unknown(q.native_symbol):
            status, text = self.protocol.render_rest_unknown(q.native_symbol)
            return Response(status, "Unknown symbol", Headers([("Content-Type", "application/json"),
                                                               ("Content-Length", str(len(text.encode())))]),
                            text.encode())
        body = self.protocol.render_candles(self.candles(q.native_symbol, q.start, q.end, q.limit), q)
        return Response(
            200,
            "OK",
            Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body.encode())))]),
            body.encode(),
        )

    # --- websocket -----------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        client = _Client(ws, time.monotonic())
        self._clients[ws] = client
        self.connections += 1
        closer = None
        if self.faults.drop_every_s:
            closer = asyncio.get_running_loop().call_later(
                self.faults.drop_every_s, lambda: self._tasks.append(asyncio.create_task(ws.close(1001, "dropped")))
            )
        try:
            async for text in ws:
                req = self.protocol.parse_client(text)
                state = self._state()
                if req.kind == "subscribe":
                    unlisted = [n for n in req.natives if self._unknown(n)]
                    answers, streamed = self.protocol.render_subscribe(req, unlisted, state)
                    self.refusals += bool(unlisted)
                    client.natives.update(n for n in streamed if n in self.natives and n not in unlisted)
                    for m in () if self.faults.silent_subscribe else answers:
                        await ws.send(m)
                elif req.kind == "heartbeat" and not self._stalled(client):
                    for m in self.protocol.render_heartbeat_reply(req, state):
                        await ws.send(m)
        except ConnectionClosed:
            pass
        finally:
            if closer is not None:
                closer.cancel()
            self._clients.pop(ws, None)

    def _stalled(self, c: _Client) -> bool:
        if not c.stalled and self.faults.stall_after_s is not None:
            c.stalled = time.monotonic() - c.opened >= self.faults.stall_after_s
        return c.stalled

    def _state(self) -> SimState:
        return SimState(now_us=self.clock.now_us(), sequence=self._sequence, last_trade_id=self._last_trade_id)

    def _receivers(self, native: str) -> list[ServerConnection]:
        if native in self.unlisted:
            return []
        return [c.ws for c in self._clients.values() if native in c.natives and not self._stalled(c)]

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            state = self._state()
            for c in list(self._clients.values()):
                if not c.natives or self._stalled(c):
                    continue
                for m in self.protocol.render_server_heartbeat(sorted(c.natives), state):
                    broadcast([c.ws], m)

    def _trade_stream(self) -> Iterator[Trade]:
        streams = [
            synth_trades(self.protocol.name, s.symbol, native, s.bars, first_id=1, per_bar=self.trades_per_bar)
            for native, s in self.natives.items()
        ]
        return heapq.merge(*streams, key=lambda t: t.time_us)

    def _frames(self, start_us: int) -> Iterator[list[Trade]]:
        """The trades from `start_us` on, a frame's worth at a time: up to `trades_per_frame`
        consecutive trades of one symbol and one bar (a frame never straddles a gap's start),
        sent at the last one's time."""
        most = self.trades_per_frame
        step = us(self.interval_s)
        group: list[Trade] = []
        for trade in self._trade_stream():
            if trade.time_us < start_us:
                continue
            if group and (
                len(group) == most
                or trade.native_symbol != group[0].native_symbol
                or trade.time_us // step != group[0].time_us // step
            ):
                yield group
                group = []
            group.append(trade)
        if group:
            yield group

    async def _play(self) -> None:
        start_us = us_from_clock(self.clock.start)
        start = self.clock.start
        # outages over before the start are history; one the start falls into is on from the start
        # (holding the clock at its beginning would rewind time to before the start)
        outages = iter([o for o in self._outages if o[1] > start])
        outage = next(outages, None)
        if outage is not None and outage[0] <= start:
            self._down_until = outage[1]
            outage = next(outages, None)
        malformed_every = self.faults.malformed_every
        n = 0
        render = self.protocol.render_trades
        for frame in self._frames(start_us):
            trade = frame[-1]
            t = trade.time_us / US_PER_S
            while outage is not None and outage[0] <= t:
                self.clock.hold = float(outage[0])
                await self._sleep_until(outage[0])
                self._down_until = outage[1]
                self.drop_all()
                outage = next(outages, None)
            self.clock.hold = t
            await self._sleep_until(t)
            self._sequence += 1
            self._last_trade_id = int(trade.trade_id or 0)
            receivers = self._receivers(trade.native_symbol)
            if receivers:
                n += 1
                if malformed_every and n % malformed_every == 0:
                    broadcast(receivers, self.protocol.render_malformed())
                broadcast(receivers, render(frame, self._state()))
                self.sent_trades += len(frame)
        # past the end of the data the exchange is down, like in a gap: no flat bars invented
        self.clock.hold = self.end_time + END_MARGIN_S
        await self._sleep_until(self.end_time + END_MARGIN_S)
        self._down_until = float("inf")
        self.drop_all()
        self.finished.set()
        log.info("simulator reached the end of its bars", extra={"trades": self.sent_trades})

    async def _sleep_until(self, t: float) -> None:
        delay = self.clock.wall_delay(t)
        if delay > 0:
            await asyncio.sleep(delay)
