"""Fan-out of new forecasts to live subscribers (the HTTP stream) over bounded queues.

A slow subscriber loses its oldest items, never slows the forecaster down; the subscription
records the lowest position it lost, so its reader can refill the hole from the database (where
every published forecast already is). An item is (stream position, forecast log object): the
position is the forecast's `seq`, so a stream can say where it is and a client can resume from there."""

from __future__ import annotations

import asyncio
from typing import Any

#: (the forecast's stream position, its forecast log object)
Item = tuple[int, dict[str, Any]]


class Subscription:
    """The items published after it was made (it is registered at once, not on first read, so
    whatever is read from the database next cannot miss a forecast published meanwhile)."""

    def __init__(self, owner: Broadcast) -> None:
        self._owner = owner
        self.queue: asyncio.Queue[Item] = asyncio.Queue(owner.maxsize)
        #: items dropped from this subscription's full queue, ever
        self.dropped = 0
        self._lost: int | None = None
        owner._subs.add(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        if self not in self._owner._subs:
            raise StopAsyncIteration
        return await self.queue.get()

    def take_lost(self) -> int | None:
        """The lowest position dropped since the last call (None: none), and forget it: the
        reader refills from there. Everything queued is newer than what was dropped (the queue
        drops its oldest), and everything read before is older."""
        lost, self._lost = self._lost, None
        return lost

    def _drop_oldest(self) -> None:
        seq, _ = self.queue.get_nowait()
        self.dropped += 1
        if self._lost is None or seq < self._lost:
            self._lost = seq

    async def aclose(self) -> None:
        self._owner._subs.discard(self)


class Broadcast:
    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._subs: set[Subscription] = set()
        self.dropped = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, seq: int, item: dict[str, Any]) -> None:
        """Queue the item for every subscriber, at once (O(subscribers), never waits)."""
        for sub in self._subs:
            if sub.queue.full():
                sub._drop_oldest()
                self.dropped += 1
            sub.queue.put_nowait((seq, item))

    def subscribe(self) -> Subscription:
        return Subscription(self)
