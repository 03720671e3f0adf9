"""Per-name leases so several daemons sharing one database never do the same job twice.

A lease is one row; taking it is a single atomic upsert that succeeds only if the row is free,
expired, or already ours. Leases expire, so a crashed holder cannot block the others forever.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select

from db.dialect import insert_for
from db.engine import Database
from db.schema import leases


def acquire(database: Database, name: str, owner: str, ttl: timedelta) -> bool:
    """Take or renew the lease `name` for `owner`; False if another owner holds it unexpired."""
    now = datetime.now(UTC)
    stmt = insert_for(database, leases).values(name=name, owner=owner, expires_at=now + ttl)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
        where=or_(leases.c.expires_at < now, leases.c.owner == owner),
    ).returning(leases.c.owner)
    with database.begin() as conn:
        row = conn.execute(stmt).first()
    return row is not None and row.owner == owner


def release(database: Database, name: str, owner: str) -> None:
    with database.begin() as conn:
        conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))


def holder(database: Database, name: str) -> tuple[str, datetime] | None:
    """Current unexpired holder of a lease and when it expires."""
    with database.engine.connect() as conn:
        row = conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None or row.expires_at < datetime.now(UTC):
        return None
    return row.owner, row.expires_at
