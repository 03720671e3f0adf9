"""The training queue on both engines: one live job per group, claims within the per-daemon and
global caps and only for owned series, a dead daemon's job claimable again after its lease,
retries with exponential backoff, then failed for good."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from db import jobs
from db.engine import Database

LEASE = timedelta(seconds=60)


def test_one_live_job_per_group_and_caps(any_db: Database) -> None:
    a = jobs.enqueue(any_db, "g1", "binance:AAA-USDT:5m", "schedule")
    assert a is not None
    assert jobs.enqueue(any_db, "g1", "binance:AAA-USDT:5m", "manual") is None  # g1 already queued
    for g in ("g2", "g3", "g4"):
        assert jobs.enqueue(any_db, g, f"binance:{g.upper()}-USDT:5m", "schedule") is not None
    # only the series this daemon owns
    assert [j.group for j in jobs.claim(any_db, "d1", series={"binance:G3-USDT:5m"}, per_daemon=1, global_cap=0,
                                        lease=LEASE)] == ["g3"]
    assert jobs.claim(any_db, "d1", series=None, per_daemon=1, global_cap=0, lease=LEASE) == []  # d1 is full
    # global cap 2: d2 gets one more, d3 none
    got = jobs.claim(any_db, "d2", series=None, per_daemon=5, global_cap=2, lease=LEASE)
    assert [j.group for j in got] == ["g1"] and got[0].status == "running" and got[0].attempts == 1
    assert jobs.claim(any_db, "d3", series=None, per_daemon=5, global_cap=2, lease=LEASE) == []
    jobs.finish(any_db, got[0].id, "d2", {"promoted": True})
    assert jobs.enqueue(any_db, "g1", "binance:AAA-USDT:5m", "manual") is not None  # done: g1 may queue again
    assert [j.group for j in jobs.claim(any_db, "d3", series=None, per_daemon=5, global_cap=2, lease=LEASE)] == ["g2"]


def test_dead_daemons_job_is_reclaimed_and_failures_back_off(any_db: Database) -> None:
    jid = jobs.enqueue(any_db, "g", "binance:AAA-USDT:5m", "initial model")
    assert jid is not None
    [first] = jobs.claim(any_db, "dead", series=None, per_daemon=1, global_cap=0, lease=timedelta(milliseconds=50))
    assert first.claimed_by == "dead"
    assert not jobs.claim(any_db, "d2", series=None, per_daemon=1, global_cap=0, lease=LEASE)
    time.sleep(0.1)
    [again] = jobs.claim(any_db, "d2", series=None, per_daemon=1, global_cap=0, lease=LEASE)
    assert again.id == jid and again.claimed_by == "d2" and again.attempts == 2
    assert not jobs.renew(any_db, jid, "dead", LEASE)  # the dead one's lease is gone for good
    assert jobs.renew(any_db, jid, "d2", LEASE)
    # attempt 2 fails: queued again after backoff x 2
    assert jobs.fail(any_db, jid, "d2", "boom", max_attempts=3, backoff=timedelta(minutes=1))
    [row] = jobs.list_jobs(any_db)
    assert row.status == "queued" and row.error == "boom"
    wait = row.not_before - datetime.now(UTC)
    assert timedelta(seconds=100) < wait <= timedelta(minutes=2)
    assert not jobs.claim(any_db, "d2", series=None, per_daemon=1, global_cap=0, lease=LEASE)  # not yet due
    assert jobs.enqueue(any_db, "g", "binance:AAA-USDT:5m", "manual") is None  # still live
    # with no backoff, the third attempt fails for good and frees the group
    with any_db.begin() as conn:
        from sqlalchemy import update

        from db.schema import training_jobs

        conn.execute(update(training_jobs).values(not_before=datetime.now(UTC)))
    [third] = jobs.claim(any_db, "d2", series=None, per_daemon=1, global_cap=0, lease=LEASE)
    assert third.attempts == 3
    assert not jobs.fail(any_db, jid, "d2", "boom again", max_attempts=3, backoff=timedelta(0))
    [row] = jobs.list_jobs(any_db)
    assert row.status == "failed" and row.finished_at is not None
    assert jobs.enqueue(any_db, "g", "binance:AAA-USDT:5m", "manual") is not None


def test_concurrent_claims_never_share_a_job(any_db: Database) -> None:
    for i in range(12):
        jobs.enqueue(any_db, f"g{i}", f"binance:A{i}-USDT:5m", "schedule")

    def daemon(name: str) -> list[int]:
        got: list[int] = []
        for _ in range(6):
            got += [j.id for j in jobs.claim(any_db, name, series=None, per_daemon=12, global_cap=8, lease=LEASE)]
        return got

    with ThreadPoolExecutor(4) as pool:
        claimed = [j for part in pool.map(daemon, ["d1", "d2", "d3", "d4"]) for j in part]
    assert len(claimed) == len(set(claimed)) == 8  # the global cap, each job once
