"""Writes wait out a database that is briefly unavailable instead of dropping data.

Another process holding SQLite's write lock past the busy timeout, or a PostgreSQL restart, makes
a write fail with an operational error. The caller's data (closed bars, a forecast batch, its
scores) is still in hand: retry the same write with capped backoff until it goes through, while
the event loop (feeds into bounded queues, the API) keeps running. Anything else (a constraint,
a fenced write, a bug) is not retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from daemon import metrics
from db.errors import DatabaseError

T = TypeVar("T")
log = logging.getLogger("barcast.db")

FIRST_WAIT_S = 0.2
MAX_WAIT_S = 5.0


def transient(exc: BaseException) -> bool:
    """A write failure that a later retry can fix: locked, busy, disconnected, server down."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OperationalError | InterfaceError | DisconnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, DatabaseError) and any(
        s in str(exc).lower() for s in ("database is locked", "connection", "server closed", "terminating"))


async def retrying(call: Callable[[], Awaitable[T]], *, what: str) -> T:
    """`await call()` until it does not fail transiently; logs the outage once and its end."""
    wait = FIRST_WAIT_S
    failures = 0
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not transient(exc):
                raise
            failures += 1
            metrics.DB_RETRIES.labels(what).inc()
            if failures == 1:
                log.warning("database unavailable; holding the data and retrying",
                            extra={"what": what, "error": str(exc)[:300]})
            await asyncio.sleep(wait)
            wait = min(MAX_WAIT_S, wait * 2)
            continue
        if failures:
            log.info("database available again; stored", extra={"what": what, "retries": failures})
        return result
