"""This daemon's place among the daemons sharing its database: heartbeat, leases, fence.

Every `heartbeat_s`: upsert the heartbeat row, renew the leases still ours (a lease taken over
while we were stalled is lost), release what rendezvous hashing now gives to another live
daemon, claim what it gives us once free. The first rounds in shared mode only heartbeat, so
daemons started together see each other before claiming (less churn). Changes are handed to
`on_change(gained, lost)` (in a task: the heartbeat never waits for models to load); the fence
is updated first on a loss (nothing more gets written for a series being given up) and last on
a gain (after the lease is ours).

Database calls run in their own thread, never in the writer thread: a long write batch must
not delay the heartbeat past the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import metrics
from daemon.live.dbretry import Outage
from daemon.live.ownership import balance, plan
from db import cluster
from db.cluster import Fence, Instance, SeriesLease
from db.engine import Database
from db.records import SeriesKey

log = logging.getLogger("barcast.cluster")

#: Rounds a daemon only heartbeats after it starts (shared mode), so daemons started together see
#: each other before claiming and the first one up does not take everything for a moment.
SETTLE_ROUNDS = 2

OnChange = Callable[[set[SeriesKey], set[SeriesKey]], Coroutine[Any, Any, None]]


class Membership:
    def __init__(self, database: Database, instance_id: str, series: Sequence[SeriesKey], *, solo: bool,
                 heartbeat_s: float, ttl_s: float, info: dict[str, Any] | None = None) -> None:
        self.database = database
        self.id = instance_id
        self.series = list(series)
        self.solo = solo
        self.heartbeat_s = heartbeat_s
        self.ttl = timedelta(seconds=ttl_s)
        self.instance = Instance(instance_id, socket.gethostname(), os.getpid(), datetime.now(UTC),
                                 datetime.now(UTC), datetime.now(UTC), info or {})
        self.fence = Fence(instance_id, {})
        self.live: list[str] = [instance_id]
        self.rounds = 0
        self.changes = 0
        self.last_ok: datetime | None = None
        self.on_change: OnChange | None = None
        self.leases: dict[SeriesKey, SeriesLease] = {}
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def owned(self) -> set[SeriesKey]:
        return set(self.fence.tokens)

    def set_info(self, **info: Any) -> None:
        self.instance = Instance(self.instance.id, self.instance.host, self.instance.pid, self.instance.started_at,
                                 self.instance.heartbeat_at, self.instance.expires_at, {**self.instance.info, **info})

    def others_alive(self) -> set[str]:
        """Ids of the other daemons alive on the database now (blocking: call in a thread): a
        heartbeat row not expired, except a process of this host that has exited (a predecessor
        that crashed: its row outlives it by up to the TTL, and what it did is ours to finish)."""
        if self.solo:
            return set()
        host = self.instance.host
        return {i.id for i in cluster.live_instances(self.database)
                if i.id != self.id and not (i.host == host and not _running(i.pid))}

    async def round(self) -> None:
        """One heartbeat round (also called once at start)."""
        live = await asyncio.to_thread(cluster.heartbeat, self.database, self.instance, self.ttl)
        self.live = [i.id for i in live]
        held = await asyncio.to_thread(cluster.renew, self.database, self.fence, self.ttl)
        lost = taken = set(self.fence.tokens) - set(held)
        if taken:
            log.warning("series taken over by another daemon while our lease had expired",
                        extra={"instance": self.id, "series": sorted(str(k) for k in lost)})
            metrics.LEASE_CHANGES.labels("lost").inc(len(lost))
        self.fence = Fence(self.id, held)
        gained: dict[SeriesKey, int] = {}
        settle = self.rounds < SETTLE_ROUNDS and not self.solo
        self.rounds += 1
        if not settle:
            step = plan(self.id, self.series, self.live, set(held), solo=self.solo)
            if step.release:
                released = set(step.release)
                self.fence = Fence(self.id, {k: t for k, t in held.items() if k not in released})
                self._notify(set(), released)
                await asyncio.to_thread(cluster.release, self.database, Fence(self.id, held), step.release)
                metrics.LEASE_CHANGES.labels("released").inc(len(released))
                lost = lost | released
            if step.claim:
                gained = await asyncio.to_thread(cluster.claim, self.database, self.id, step.claim, self.ttl,
                                                 force=self.solo)
                if gained:
                    self.fence = Fence(self.id, {**self.fence.tokens, **gained})
                    metrics.LEASE_CHANGES.labels("claimed").inc(len(gained))
        self.leases = await asyncio.to_thread(cluster.series_leases, self.database)
        self.last_ok = datetime.now(UTC)
        for kind, n in cluster.REJECTED.rejected.items():
            metrics.FENCED_ROWS.labels(kind).set(n)
        metrics.OWNED_SERIES.set(len(self.fence.tokens))
        metrics.LIVE_INSTANCES.set(len(self.live))
        if gained or lost:
            self.changes += 1
            log.info("series ownership changed", extra={
                "instance": self.id, "gained": len(gained), "lost": len(lost), "owned": len(self.fence.tokens),
                "live": self.live})
            if gained or taken:
                self._notify(set(gained), taken)  # released ones were handed on above

    def _notify(self, gained: set[SeriesKey], lost: set[SeriesKey]) -> None:
        """Hand a change to `on_change` in a task of its own: loading models or restarting feeds
        must not hold up the heartbeat (the fence already says what may be written). The
        receiver serialises them (in order: asyncio locks are fair)."""
        if self.on_change is None:
            return
        task = asyncio.create_task(self.on_change(gained, lost), name="ownership-change")
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("applying an ownership change failed", exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until every ownership change handed out so far has been applied."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def run(self) -> None:
        outage = Outage(log, "heartbeat failed")
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep trying, leases run out on their own
                outage.failed(exc, instance=self.id)
            else:
                outage.ok(instance=self.id)

    async def leave(self) -> None:
        self.fence = Fence(self.id, {})
        await asyncio.to_thread(cluster.leave, self.database, self.id)

    def status(self) -> dict[str, Any]:
        """This daemon's view of the cluster, from the last heartbeat round (no database call)."""
        now = datetime.now(UTC)
        owners = {k: lease.owner for k, lease in self.leases.items() if lease.live(now)}
        return {"instance": self.id, "mode": "solo" if self.solo else "shared", "live": self.live,
                "owned": len(self.fence.tokens), "balance": balance(owners), "last_heartbeat": self.last_ok,
                "heartbeat_s": self.heartbeat_s, "lease_ttl_s": self.ttl.total_seconds(),
                "fenced_rows": dict(cluster.REJECTED.rejected)}

    def lease_of(self, key: SeriesKey) -> dict[str, Any]:
        """Owner (None once the lease has run out, as the database's status says), lease expiry
        and fencing token of one series, as of the last round."""
        lease = self.leases.get(key)
        if lease is None:
            return {"owner": None, "lease_expires": None, "token": None}
        owner = lease.owner if lease.live(datetime.now(UTC)) else None
        return {"owner": owner, "lease_expires": lease.expires_at, "token": lease.token}


def _running(pid: int) -> bool:
    """Whether a process `pid` of this host is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
