"""Every daemon serving a series serves its current champion, whoever promoted it.

A promotion made elsewhere (another daemon's retraining, `barcast models promote`) changes the
registry, not this daemon's memory. So the registry is polled (one query for the first series
of every group served here) every `every_s` and a group whose champion differs from the one
last installed is reloaded. On PostgreSQL a promotion also NOTIFYs `PROMOTIONS_CHANNEL` at
commit; a listener thread (its own connection, LISTEN) wakes the poll at once, so the window in
which two daemons serve different champions of one group is a database round trip, not a poll
period. On SQLite (one daemon, no NOTIFY) the poll alone catches CLI promotions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from daemon.live.dbretry import Outage
from db import registry
from db.engine import Database, pg_connect_args
from db.records import SeriesKey
from trainer.retrain_job import BASELINE_ID

log = logging.getLogger("barcast.champions")

Install = Callable[[str], Awaitable[Any]]


class ChampionWatch:
    def __init__(self, database: Database, groups: Callable[[], dict[str, SeriesKey]],
                 serving: Callable[[str], str | None], install: Install, *, every_s: float) -> None:
        """`groups`: model group -> the series whose champion is the group's, for the groups
        this daemon serves now; `serving(group)`: the model id it serves; `install(group)`
        reloads one."""
        self.database = database
        self.groups = groups
        self.serving = serving
        self.install = install
        self.every_s = every_s
        #: The champion last tried per group: an unusable artifact is tried once, not every poll.
        self.tried: dict[str, str] = {}
        self.reloads = 0
        self.notifications = 0
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def check(self) -> list[str]:
        """Reload the groups whose champion changed since they were installed; returns them."""
        served = self.groups()
        if not served:
            return []
        found = await asyncio.to_thread(registry.champions, self.database, list(set(served.values())))
        # a series with no champion term is served by the baseline (what a reload installs)
        champs = {g: found.get(key, BASELINE_ID) for g, key in served.items()}
        changed = [g for g in served
                   if champs[g] not in (self.serving(g), self.tried.get(g)) and self.serving(g) is not None]
        for group in changed:
            log.info("champion changed in the registry; reloading", extra={
                "group": group, "model": champs[group], "previous": self.serving(group)})
            self.tried[group] = champs[group]
            await self.install(group)
            self.reloads += 1
        return changed

    async def run(self) -> None:
        if self.database.engine.dialect.name == "postgresql":
            self._listen_in_thread(asyncio.get_running_loop())
        outage = Outage(log, "champion check failed")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.every_s)
                self._wake.clear()
                try:
                    await self.check()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    outage.failed(exc)
                else:
                    outage.ok()
        finally:
            self._stop.set()

    def _listen_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        url = self.database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        settings = pg_connect_args(self.database.engine.url)

        def woke() -> None:
            self.notifications += 1
            self._wake.set()

        def listen() -> None:
            import psycopg
            from psycopg.conninfo import make_conninfo

            outage = Outage(log, "promotion listener reconnecting")
            while not self._stop.is_set():
                try:
                    with psycopg.connect(make_conninfo(url, **settings), autocommit=True) as conn:
                        conn.execute(f"LISTEN {registry.PROMOTIONS_CHANNEL}")
                        outage.ok()
                        loop.call_soon_threadsafe(woke)  # (re)connected: whatever was missed, check
                        while not self._stop.is_set():
                            for _ in conn.notifies(timeout=1.0, stop_after=1):
                                loop.call_soon_threadsafe(woke)
                except Exception as exc:  # the database is away: the poll still runs; retry
                    if self._stop.wait(min(self.every_s, 5.0)):
                        return
                    outage.failed(exc)

        self._thread = threading.Thread(target=listen, name="promotion-listener", daemon=True)
        self._thread.start()


def first_series(groups: Collection[str], series_of: Callable[[str], list[SeriesKey]]) -> dict[str, SeriesKey]:
    """group -> the series whose champion the group serves (its first)."""
    return {g: keys[0] for g in groups if (keys := series_of(g))}
