"""One exchange websocket, kept alive forever: the I/O shell around an exchange module.

Reconnects with capped exponential backoff and full jitter, resets the backoff once a connection
stayed up `backoff_reset_after_s`, resubscribes on every connect, treats `stall_timeout_s` without
any message as a dead stream, pings at the websocket level and sends the exchange's own heartbeat
where it needs one. Received text goes into a bounded queue together with connection events; if
the consumer falls behind and the queue fills, the feed says so (log, metric) and reconnects, so
the gap is backfilled instead of silently missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from daemon import metrics
from daemon.config import FeedsConfig
from daemon.feeds.base import ExchangeProtocol
from daemon.feeds.capture import CaptureWriter

log = logging.getLogger("barcast.feeds")


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """What the connection hands the consumer, in order.

    `up`: subscribed (messages follow); `message`: one raw text with its local receive time;
    `down`: the connection ended; what was in flight may be lost, the consumer must resync.
    """

    kind: Literal["up", "message", "down"]
    received: float
    text: str | bytes = ""
    reason: str = ""
    #: `up`: the natives subscribed (the subscribe messages sent for them)
    natives: tuple[str, ...] = ()


class _Resync(Exception):
    """The consumer fell behind: drop this connection so the missed span gets backfilled."""


class _Stalled(Exception):
    pass


def backoff_delay(attempt: int, initial: float, cap: float, rnd: random.Random | None = None) -> float:
    """Full jitter: uniform in [0.5, 1] of min(cap, initial * 2**attempt) (never zero: no hot loop)."""
    base = min(cap, initial * (2 ** min(attempt, 30)))
    return base * (0.5 + 0.5 * (rnd or random).random())


class FeedConnection:
    """Runs one websocket for several symbols of one exchange until `stop()`."""

    def __init__(
        self,
        protocol: ExchangeProtocol,
        natives: Sequence[str] | Callable[[], Sequence[str]],
        options: FeedsConfig,
        *,
        url: str | None = None,
        queue: asyncio.Queue[FeedEvent] | None = None,
        capture: CaptureWriter | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.protocol = protocol
        #: what each connection subscribes (a callable: asked at every connect; the session
        #: leaves out the symbols the exchange refused until they are due again)
        self._natives: Callable[[], Sequence[str]] = natives if callable(natives) else lambda: natives
        self.natives = list(self._natives())
        self.options = options
        self.url = url or protocol.ws_url
        self.queue: asyncio.Queue[FeedEvent] = queue or asyncio.Queue(options.queue_size)
        self.capture = capture
        self.clock = clock or time.time
        self.connects = 0
        #: connections that ended or could not be opened, each followed by a reconnect attempt
        self.failures = 0
        self.resyncs = 0
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def reconnects(self) -> int:
        """Reconnect attempts so far: one after every failed attempt or dropped connection
        (refused and timed-out attempts count, not just the ones that got through)."""
        return self.failures

    @property
    def connected(self) -> bool:
        """A websocket is open (subscribed or subscribing)."""
        return self._ws is not None

    def stop(self) -> None:
        self._stopping.set()
        self.reconnect()

    def reconnect(self) -> None:
        """Drop the current connection (the exchange asked for it, or the consumer needs a resync)."""
        if self._ws is not None:
            self._closing = asyncio.ensure_future(self._ws.close())

    async def run(self) -> None:
        opts = self.options
        attempt = 0
        name = self.protocol.name
        while not self._stopping.is_set():
            natives = list(self._natives())
            if not natives:  # every symbol refused and not due again: no connection to hold
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                continue
            started = time.monotonic()
            reason = ""
            subscribed = False
            try:
                async with connect(
                    self.url,
                    ping_interval=opts.ping_interval_s,
                    ping_timeout=opts.ping_timeout_s,
                    open_timeout=max(opts.stall_timeout_s, 5.0),
                    close_timeout=2,
                    # frames up to 4x the parse limit are received and counted as too large;
                    # beyond that the websocket closes (1009) and the gap is backfilled
                    max_size=4 * self.protocol.max_frame_bytes,
                    compression=None,
                ) as ws:
                    self._ws = ws
                    self.connects += 1
                    metrics.FEED_CONNECTED.labels(name).inc()
                    if self.capture is not None and self.connects > 1:
                        self.capture.reconnected()
                    await self._send(ws, self.protocol.subscribe_messages(natives))
                    await self.queue.put(FeedEvent("up", self.clock(), natives=tuple(natives)))
                    subscribed = True
                    log.info("feed connected", extra={"exchange": name, "url": self.url, "symbols": natives})
                    await self._read(ws)
            except _Resync:
                reason = "consumer behind (queue full)"
                self.resyncs += 1
            except _Stalled:
                reason = f"stalled: no message for {opts.stall_timeout_s:g}s"
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, InvalidURI):
                    log.error("bad websocket URL", extra={"exchange": name, "url": self.url})
            finally:
                if self._ws is not None:
                    metrics.FEED_CONNECTED.labels(name).dec()
                self._ws = None
            if subscribed:
                await self.queue.put(FeedEvent("down", self.clock(), reason=reason or "closed"))
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= opts.backoff_reset_after_s:
                attempt = 0
            delay = backoff_delay(attempt, opts.backoff_initial_s, opts.backoff_max_s)
            attempt += 1
            self.failures += 1
            metrics.RECONNECTS.labels(name).inc()
            log.warning(
                "feed disconnected; reconnecting",
                extra={"exchange": name, "reason": reason or "closed", "retry_in_s": round(delay, 3)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def send(self, messages: Sequence[str]) -> None:
        """Send `messages` on the open connection (the session asks again for refused symbols);
        nothing when it is down or goes down meanwhile: the next connection subscribes anew."""
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(WebSocketException, OSError):
            await self._send(ws, messages)

    async def _send(self, ws: ClientConnection, messages: Sequence[str]) -> None:
        gap = self.protocol.send_interval_s
        for i, msg in enumerate(messages):
            if i and gap:
                await asyncio.sleep(gap)  # exchanges cut connections that send too fast
            await ws.send(msg)
            if self.capture is not None:
                self.capture.sent(msg)

    async def _read(self, ws: ClientConnection) -> None:
        opts = self.options
        hb_task = None
        hb = self.protocol.client_heartbeat()
        if hb is not None and self.protocol.client_heartbeat_s:
            hb_task = asyncio.create_task(self._heartbeats(ws, hb, self.protocol.client_heartbeat_s))
        depth = metrics.QUEUE_DEPTH.labels(f"feed:{self.protocol.name}")
        try:
            while True:
                try:
                    text = await asyncio.wait_for(ws.recv(), opts.stall_timeout_s)
                except TimeoutError:
                    raise _Stalled from None
                now = self.clock()
                if self.capture is not None:
                    self.capture.received(text, now)
                try:
                    self.queue.put_nowait(FeedEvent("message", now, text))
                except asyncio.QueueFull:
                    metrics.QUEUE_FULL.labels(f"feed:{self.protocol.name}").inc()
                    log.warning(
                        "feed queue full: consumer behind, resyncing",
                        extra={"exchange": self.protocol.name, "size": self.queue.maxsize},
                    )
                    raise _Resync from None
                depth.set(self.queue.qsize())
        finally:
            if hb_task is not None:
                hb_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await hb_task

    async def _heartbeats(self, ws: ClientConnection, message: str, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await ws.send(message)
