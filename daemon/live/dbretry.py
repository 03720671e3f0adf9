"""Writes wait out a database that is briefly unavailable instead of dropping data.

Another process holding SQLite's write lock past the busy timeout, or a PostgreSQL restart, makes
a write fail with an operational error. The caller's data (closed bars, a forecast batch, its
scores) is still in hand: retry the same write with capped backoff until it goes through, while
the event loop (feeds into bounded queues, the API) keeps running. Anything else (a full disk,
a constraint, a fenced write, a bug) is not retried: it fails loudly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError

from daemon import metrics

T = TypeVar("T")
log = logging.getLogger("barcast.db")

FIRST_WAIT_S = 0.2
MAX_WAIT_S = 5.0


#: PostgreSQL SQLSTATEs of a server going away or coming back: admin/crash shutdown, starting up.
_PG_RESTART_STATES = frozenset({"57P01", "57P02", "57P03"})


def _transient_driver_error(orig: object) -> bool:
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "locked" in text or "busy" in text  # not "disk is full", "readonly", "corrupt"
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if isinstance(orig, psycopg.OperationalError):
        state = orig.sqlstate
        return state is None or state.startswith("08") or state in _PG_RESTART_STATES
    return False


def reason(exc: BaseException) -> str:
    """A failure in one line for the log: the driver's own first line (SQLAlchemy's text adds the
    statement, its parameters and a link), else the exception's."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    return (lines[0] if lines else type(orig).__name__)[:300]


class Outage:
    """The log of a periodic database task (a heartbeat, a poll, a listener) while the database is
    away: one warning when it starts failing, a reminder every `remind_s` while it keeps failing,
    and one line when it works again, not a warning every round (three a second at a 1 s heartbeat
    in an outage seen on PostgreSQL)."""

    def __init__(self, logger: logging.Logger, message: str, *, remind_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.message, self.remind_s, self.clock = logger, message, remind_s, clock
        self.failures = 0
        self._since = 0.0
        self._told = 0.0

    def failed(self, exc: BaseException, **extra: Any) -> None:
        now = self.clock()
        self.failures += 1
        if self.failures == 1:
            self._since = self._told = now
        elif now - self._told < self.remind_s:
            return
        else:
            self._told = now
        self.logger.warning(self.message, extra={**extra, "error": reason(exc), "failures": self.failures,
                                                 "failing_s": round(now - self._since, 1)})

    def ok(self, **extra: Any) -> None:
        if self.failures:
            self.logger.info(f"{self.message}: works again", extra={
                **extra, "failures": self.failures, "failing_s": round(self.clock() - self._since, 1)})
            self.failures = 0


def transient(exc: BaseException) -> bool:
    """A write failure that a later retry can fix: SQLite locked or busy; a PostgreSQL connection
    lost, refused or restarting. Not a full disk, a read-only file, a constraint or a bug."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, DisconnectionError):
            return True
        if isinstance(seen, DBAPIError) and _transient_driver_error(seen.orig):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def retrying(call: Callable[[], Awaitable[T]], *, what: str, until: asyncio.Event | None = None) -> T:
    """`await call()` until it does not fail transiently; logs the outage once and its end.
    `until` (a stop): once set, the last transient failure is raised instead of waiting on (a
    stop during an outage is not held up by work that needs the database)."""
    wait = FIRST_WAIT_S
    failures = 0
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not transient(exc) or (until is not None and until.is_set()):
                raise
            failures += 1
            metrics.DB_RETRIES.labels(what).inc()
            if failures == 1:
                log.warning("database unavailable; holding the data and retrying",
                            extra={"what": what, "error": reason(exc)})
            if until is None:
                await asyncio.sleep(wait)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), wait)
                if until.is_set():
                    raise
            wait = min(MAX_WAIT_S, wait * 2)
            continue
        if failures:
            log.info("database available again; stored", extra={"what": what, "retries": failures})
        return result
