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
