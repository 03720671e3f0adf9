"""Fan-out of new forecasts to live subscribers (the HTTP stream) over bounded queues.

A slow subscriber loses its oldest items (counted), never slows the forecaster down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class Broadcast:
    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.dropped = 0

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, item: dict[str, Any]) -> None:
        for q in self._queues:
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(item)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.maxsize)
        self._queues.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.discard(q)
