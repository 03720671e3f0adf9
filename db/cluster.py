"""Daemons sharing one database: instance heartbeats, fenced per-series leases.

The database is the coordination engine (no broker): each daemon keeps a heartbeat row in
`instances`; each series has at most one owner, a lease row in `series_leases` with an expiry
renewed by the owner's heartbeat and a fencing token that grows by one at every change of owner.

Every write of a series' data (bars from feeds, forecasts, scores) runs `fenced()` inside its
own transaction: rows of series whose lease no longer carries the writer's token are dropped.
On PostgreSQL the lease rows are read `FOR SHARE`, so a takeover (an UPDATE of that row) waits
for the write to commit, and a write that starts after the takeover sees the new token: a
daemon that lost a series can never write it again. SQLite serialises writers (BEGIN
IMMEDIATE), which gives the same guarantee.

Times are the daemons' clocks (UTC); daemons on several machines need them synchronised (NTP)
to well under the lease TTL.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, or_, select, tuple_, update

from db.dialect import insert_for
from db.engine import Database
from db.records import SeriesKey
from db.schema import instances as inst_t
from db.schema import series_leases as lease_t


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeriesLease:
    series: SeriesKey
    owner: str  # "" when released
    token: int
    acquired_at: datetime
    expires_at: datetime

    def live(self, now: datetime) -> bool:
        return bool(self.owner) and self.expires_at > now


@dataclass(frozen=True, slots=True)
class Fence:
    """What a writer carries: its instance id and the token of every series it owns."""

    owner: str
    tokens: Mapping[SeriesKey, int]


class FenceCounter:
    """Rows dropped by fencing, per kind of write (exported as a metric by the daemon)."""

    def __init__(self) -> None:
        self.rejected: dict[str, int] = {}

    def add(self, kind: str, n: int) -> None:
        if n:
            self.rejected[kind] = self.rejected.get(kind, 0) + n


REJECTED = FenceCounter()


def _key(row: Any) -> SeriesKey:
    return SeriesKey(row.exchange, row.symbol, row.interval)


def _series_in(keys: Collection[SeriesKey]) -> Any:
    return tuple_(lease_t.c.exchange, lease_t.c.symbol, lease_t.c.interval).in_(
        [(k.exchange, k.symbol, k.interval) for k in keys]
    )


# ---- instances ----------------------------------------------------------------------------------


def heartbeat(database: Database, instance: Instance, ttl: timedelta) -> list[Instance]:
    """Upsert this daemon's heartbeat row; return every live instance (this one included)."""
    now = datetime.now(UTC)
    values = {"id": instance.id, "host": instance.host, "pid": instance.pid, "started_at": instance.started_at,
              "heartbeat_at": now, "expires_at": now + ttl, "info": instance.info}
    stmt = insert_for(database, inst_t).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={c: stmt.excluded[c] for c in ("host", "pid", "started_at", "heartbeat_at", "expires_at", "info")},
    )
    with database.begin() as conn:
        conn.execute(stmt)
        conn.execute(delete(inst_t).where(inst_t.c.expires_at < now - ttl * 10))  # long dead: forget
        rows = conn.execute(select(inst_t).where(inst_t.c.expires_at > now).order_by(inst_t.c.id)).all()
    return [Instance(r.id, r.host, r.pid, r.started_at, r.heartbeat_at, r.expires_at, dict(r.info or {}))
            for r in rows]


def list_instances(database: Database) -> list[Instance]:
    with database.engine.connect() as conn:
        rows = conn.execute(select(inst_t).order_by(inst_t.c.id)).all()
    return [Instance(r.id, r.host, r.pid, r.started_at, r.heartbeat_at, r.expires_at, dict(r.info or {}))
            for r in rows]


def live_instances(database: Database) -> list[Instance]:
    """The daemons whose heartbeat has not expired."""
    now = datetime.now(UTC)
    return [i for i in list_instances(database) if i.expires_at > now]


def leave(database: Database, instance_id: str) -> None:
    """A clean stop: release every lease and remove the heartbeat, so others take over at once."""
    now = datetime.now(UTC)
    with database.begin() as conn:
        conn.execute(update(lease_t).where(lease_t.c.owner == instance_id).values(owner="", expires_at=now))
        conn.execute(delete(inst_t).where(inst_t.c.id == instance_id))


# ---- leases -------------------------------------------------------------------------------------


def series_leases(database: Database) -> dict[SeriesKey, SeriesLease]:
    with database.engine.connect() as conn:
        rows = conn.execute(select(lease_t)).all()
    return {_key(r): SeriesLease(_key(r), r.owner, int(r.token), r.acquired_at, r.expires_at) for r in rows}


def claim(database: Database, owner: str, series: Iterable[SeriesKey], ttl: timedelta, *,
          force: bool = False) -> dict[SeriesKey, int]:
    """Take the leases of `series` that are free (never held, released or expired) for `owner`,
    each with a new fencing token (the previous one + 1). `force` takes them whoever holds them
    (a single daemon on its own database). Returns the series won and their tokens."""
    keys = list(series)
    if not keys:
        return {}
    now = datetime.now(UTC)
    rows = [{"exchange": k.exchange, "symbol": k.symbol, "interval": k.interval, "owner": owner, "token": 1,
             "acquired_at": now, "expires_at": now + ttl} for k in keys]
    stmt = insert_for(database, lease_t)
    free = or_(lease_t.c.owner == "", lease_t.c.expires_at <= now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["exchange", "symbol", "interval"],
        set_={"owner": stmt.excluded.owner, "token": lease_t.c.token + 1,
              "acquired_at": stmt.excluded.acquired_at, "expires_at": stmt.excluded.expires_at},
        where=None if force else free,
    )
    with database.begin() as conn:
        conn.execute(stmt, rows)
        won = conn.execute(
            select(lease_t).where(_series_in(keys), lease_t.c.owner == owner, lease_t.c.acquired_at == now)
        ).all()
    return {_key(r): int(r.token) for r in won}


def renew(database: Database, fence: Fence, ttl: timedelta) -> dict[SeriesKey, int]:
    """Extend the leases this owner still holds with the same tokens; returns those (a lease
    taken over after it expired is not among them: the series is lost)."""
    if not fence.tokens:
        return {}
    now = datetime.now(UTC)
    with database.begin() as conn:
        held = _held(conn, fence, lock=True)
        if held:
            conn.execute(
                update(lease_t).where(_series_in(list(held)), lease_t.c.owner == fence.owner)
                .values(expires_at=now + ttl)
            )
    return held


def release(database: Database, fence: Fence, series: Iterable[SeriesKey]) -> None:
    """Give leases up (rebalancing): the token stays, so the next owner's is higher."""
    keys = [k for k in series if k in fence.tokens]
    if not keys:
        return
    now = datetime.now(UTC)
    with database.begin() as conn:
        conn.execute(update(lease_t).where(_series_in(keys), lease_t.c.owner == fence.owner)
                     .values(owner="", expires_at=now))


def _held(conn: Connection, fence: Fence, *, lock: bool, keys: Collection[SeriesKey] | None = None
          ) -> dict[SeriesKey, int]:
    stmt = select(lease_t.c.exchange, lease_t.c.symbol, lease_t.c.interval, lease_t.c.token).where(
        lease_t.c.owner == fence.owner
    )
    if keys is not None:
        stmt = stmt.where(_series_in(keys))
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    return {
        k: t for r in conn.execute(stmt).all()
        if fence.tokens.get(k := _key(r)) == (t := int(r.token))
    }


def fenced(conn: Connection, fence: Fence | None, keys: Collection[SeriesKey], kind: str) -> set[SeriesKey]:
    """Inside a write transaction: the series of `keys` this writer may still write (all when
    `fence` is None). Locks those lease rows until the transaction ends (PostgreSQL)."""
    wanted = set(keys)
    if fence is None or not wanted:
        return wanted
    mine = [k for k in wanted if k in fence.tokens]
    ok = set(_held(conn, fence, lock=True, keys=mine)) if mine else set()
    return ok


def lease_filter(conn: Connection, fence: Fence | None, rows: list[dict[str, Any]], kind: str
                 ) -> list[dict[str, Any]]:
    """Rows (dicts with exchange, symbol, interval) whose series this writer still owns."""
    if fence is None or not rows:
        return rows
    keys = {SeriesKey(r["exchange"], r["symbol"], r["interval"]) for r in rows}
    ok = fenced(conn, fence, keys, kind)
    kept = [r for r in rows if SeriesKey(r["exchange"], r["symbol"], r["interval"]) in ok]
    REJECTED.add(kind, len(rows) - len(kept))
    return kept
