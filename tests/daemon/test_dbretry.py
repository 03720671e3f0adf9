"""Which write failures are waited out and which fail loudly, on real SQLite errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event, text

from daemon.live.dbretry import transient
from db.engine import open_database
from db.errors import DatabaseError


def test_locked_is_transient_full_disk_and_bad_sql_are_not(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'l.db'}")
    event.listen(db.engine, "connect", lambda c, _r: c.execute("PRAGMA busy_timeout=50"))
    db.engine.pool.dispose()
    holder = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    try:
        with pytest.raises(DatabaseError) as locked, db.begin() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        holder.close()
    assert "locked" in str(locked.value) and transient(locked.value)

    with pytest.raises(DatabaseError) as bad, db.begin() as conn:
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))
    assert not transient(bad.value)

    event.listen(db.engine, "connect", lambda c, _r: c.execute("PRAGMA max_page_count=30"))
    db.engine.pool.dispose()
    with pytest.raises(DatabaseError) as full, db.begin() as conn:
        conn.execute(text("CREATE TABLE filler (x BLOB)"))
        for _ in range(100):
            conn.execute(text("INSERT INTO filler VALUES (zeroblob(4000))"))
    assert "full" in str(full.value) and not transient(full.value)
    db.close()


def test_outage_logs_once_reminds_and_says_when_it_works_again(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from daemon.live.dbretry import Outage

    now = [0.0]
    outage = Outage(logging.getLogger("barcast.test"), "poll failed", remind_s=60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, "barcast.test")
    for t in (0, 1, 2, 59, 61, 62, 125):
        now[0] = float(t)
        outage.failed(RuntimeError("down\nsecond line"))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.failures, r.failing_s) for r in warned] == [(1, 0.0), (5, 61.0), (7, 125.0)]  # type: ignore[attr-defined]
    assert {r.error for r in warned} == {"down"}  # type: ignore[attr-defined]
    now[0] = 130.0
    outage.ok()
    outage.ok()  # once
    back = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [(r.getMessage(), r.failures, r.failing_s) for r in back] == [  # type: ignore[attr-defined]
        ("poll failed: works again", 7, 130.0)]


def test_a_failing_heartbeat_warns_once_not_every_round(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The database away (here: another process holding SQLite's write lock) failed every
    heartbeat round with a warning each (three two-line warnings a second at a 1 s heartbeat
    with the champion check and the listener, seen on PostgreSQL): one warning, then one line
    when it works again."""
    import asyncio
    import logging

    from daemon.live.membership import Membership
    from db.records import SeriesKey

    db = open_database(f"sqlite:///{tmp_path / 'h.db'}")
    event.listen(db.engine, "connect", lambda c, _r: c.execute("PRAGMA busy_timeout=20"))
    db.engine.pool.dispose()
    member = Membership(db, "me", [SeriesKey("binance", "BTC-USDT")], solo=False, heartbeat_s=0.02, ttl_s=5)
    caplog.set_level(logging.INFO, "barcast.cluster")

    async def run() -> None:
        task = asyncio.create_task(member.run())
        holder = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            await asyncio.sleep(0.5)  # every round fails meanwhile (a 20 ms lock wait each)
        finally:
            holder.close()
        while not any("works again" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(run(), 60))
    db.close()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "heartbeat failed" in r.getMessage()]
    assert len(warned) == 1 and "locked" in warned[0].error  # type: ignore[attr-defined]
    (back,) = [r for r in caplog.records if "works again" in r.getMessage()]
    assert back.failures > 3  # type: ignore[attr-defined]
