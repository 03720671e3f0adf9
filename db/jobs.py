"""Retraining jobs in a table: enqueue, claim, renew, finish, retry with backoff.

No broker: the database is the queue. A group has at most one live (queued or running) job
(`active_group` is unique). Claiming locks candidate rows with `SELECT ... FOR UPDATE SKIP
LOCKED` (PostgreSQL; SQLite serialises writers), under an advisory transaction lock that makes
the global cap exact across daemons. A running job's lease is renewed by its daemon; a job whose
lease ran out (its daemon died) is claimable again, so training survives a `kill -9`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, text, update

from db.dialect import insert_for
from db.engine import Database
from db.schema import training_jobs as jobs_t

#: Key of the PostgreSQL advisory lock serialising claims (the global cap).
CLAIM_LOCK = 0x62617263  # "barc"


@dataclass(frozen=True, slots=True)
class TrainingJob:
    id: int
    group: str
    series: str
    reason: str
    status: str
    attempts: int
    not_before: datetime
    claimed_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    outcome: dict[str, Any] | None


def _job(r: Any) -> TrainingJob:
    return TrainingJob(int(r.id), r.model_group, r.series, r.reason, r.status, int(r.attempts), r.not_before,
                       r.claimed_by, r.lease_expires_at, r.created_at, r.finished_at, r.error,
                       dict(r.outcome) if r.outcome is not None else None)


def enqueue(database: Database, group: str, series: str, reason: str, *, not_before: datetime | None = None
            ) -> int | None:
    """Queue a job for `group`; None if the group already has a queued or running one."""
    now = datetime.now(UTC)
    stmt = insert_for(database, jobs_t).values(
        model_group=group, active_group=group, series=series, reason=reason, status="queued", attempts=0,
        not_before=not_before or now, created_at=now,
    ).on_conflict_do_nothing(index_elements=["active_group"]).returning(jobs_t.c.id)
    with database.begin() as conn:
        row = conn.execute(stmt).first()
    return int(row[0]) if row is not None else None


def _claimable(now: datetime) -> Any:
    return or_(and_(jobs_t.c.status == "queued", jobs_t.c.not_before <= now),
               and_(jobs_t.c.status == "running", jobs_t.c.lease_expires_at < now))


def _running(conn: Connection, now: datetime, owner: str | None = None) -> int:
    cond = [jobs_t.c.status == "running", jobs_t.c.lease_expires_at >= now]
    if owner is not None:
        cond.append(jobs_t.c.claimed_by == owner)
    return int(conn.execute(select(func.count()).select_from(jobs_t).where(*cond)).scalar_one())


def claim(database: Database, owner: str, *, series: Collection[str] | None, per_daemon: int, global_cap: int,
          lease: timedelta) -> list[TrainingJob]:
    """Claim due jobs for `owner`: only those of `series` (the first series of groups this daemon
    owns; None: any), at most `per_daemon` running here and `global_cap` (0: no cap) running in
    all. A job whose previous holder's lease ran out counts as a failed attempt being retried."""
    now = datetime.now(UTC)
    with database.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK})
        free = per_daemon - _running(conn, now, owner)
        if global_cap:
            free = min(free, global_cap - _running(conn, now))
        if free <= 0:
            return []
        stmt = select(jobs_t.c.id).where(_claimable(now))
        if series is not None:
            if not series:
                return []
            stmt = stmt.where(jobs_t.c.series.in_(list(series)))
        stmt = stmt.order_by(jobs_t.c.not_before, jobs_t.c.id).limit(free).with_for_update(skip_locked=True)
        ids = [int(r[0]) for r in conn.execute(stmt)]
        if not ids:
            return []
        conn.execute(update(jobs_t).where(jobs_t.c.id.in_(ids)).values(
            status="running", claimed_by=owner, lease_expires_at=now + lease, attempts=jobs_t.c.attempts + 1))
        rows = conn.execute(select(jobs_t).where(jobs_t.c.id.in_(ids)).order_by(jobs_t.c.id)).all()
    return [_job(r) for r in rows]


def renew(database: Database, job_id: int, owner: str, lease: timedelta) -> bool:
    """Extend a running job's lease; False if it is no longer ours (it expired and was re-claimed)."""
    now = datetime.now(UTC)
    with database.begin() as conn:
        n = conn.execute(update(jobs_t).where(jobs_t.c.id == job_id, jobs_t.c.claimed_by == owner,
                                              jobs_t.c.status == "running")
                         .values(lease_expires_at=now + lease)).rowcount
    return bool(n)


def finish(database: Database, job_id: int, owner: str, outcome: dict[str, Any]) -> None:
    with database.begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.id == job_id, jobs_t.c.claimed_by == owner).values(
            status="done", active_group=None, finished_at=datetime.now(UTC), outcome=outcome, error=None))


def fail(database: Database, job_id: int, owner: str, error: str, *, max_attempts: int, backoff: timedelta
         ) -> bool:
    """A failed attempt: queued again after `backoff` × 2^(attempts − 1), or failed for good after
    `max_attempts`. Returns True if it will be retried."""
    now = datetime.now(UTC)
    with database.begin() as conn:
        row = conn.execute(select(jobs_t.c.attempts).where(jobs_t.c.id == job_id, jobs_t.c.claimed_by == owner)
                           ).first()
        if row is None:
            return False
        attempts = int(row[0])
        if attempts < max_attempts:
            conn.execute(update(jobs_t).where(jobs_t.c.id == job_id).values(
                status="queued", claimed_by=None, lease_expires_at=None, error=error,
                not_before=now + backoff * (2 ** (attempts - 1))))
            return True
        conn.execute(update(jobs_t).where(jobs_t.c.id == job_id).values(
            status="failed", active_group=None, finished_at=now, error=error))
        return False


def get(database: Database, job_id: int) -> TrainingJob:
    with database.engine.connect() as conn:
        return _job(conn.execute(select(jobs_t).where(jobs_t.c.id == job_id)).one())


def hurry(database: Database, group: str) -> TrainingJob | None:
    """The group's live (queued or running) job, a queued one made due now (an operator asked
    for a retrain while it waited out a retry's backoff); None when the group has none."""
    now = datetime.now(UTC)
    with database.begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.active_group == group, jobs_t.c.status == "queued",
                                          jobs_t.c.not_before > now).values(not_before=now))
        row = conn.execute(select(jobs_t).where(jobs_t.c.active_group == group)).first()
    return _job(row) if row is not None else None


def list_jobs(database: Database, *, limit: int = 50) -> list[TrainingJob]:
    with database.engine.connect() as conn:
        rows = conn.execute(select(jobs_t).order_by(jobs_t.c.id.desc()).limit(limit)).all()
    return [_job(r) for r in rows]
