"""A read-only command next to a writing process must never delete the writer's WAL.

SQLite's POSIX locks belong to the process: closing *any* descriptor on the database file drops
all of them. A writer that lost its locks looks absent to a reader, whose close then checkpoints
and deletes the -wal/-shm under the writer, and what the writer commits afterwards is lost.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from db.engine import open_database

# The writer opens the database twice in one process (as the demo and a CLI command running a
# service do), then commits one bar per loop until told to stop, reporting each commit.
WRITER = r"""
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from daemon.feeds.randomwalk import random_walk_bars
from db.bars import upsert_bars
from db.engine import open_database
url, stop = sys.argv[1], Path(sys.argv[2])
first = open_database(url)
second = open_database(url)
bars = random_walk_bars("BTC-USD", 10_000, start=datetime(2024, 1, 1, tzinfo=UTC))
n = 0
while not stop.exists() and n < len(bars):
    upsert_bars(first, bars[n:n + 1])
    n += 1
    print(n, flush=True)
    time.sleep(0.02)
second.close()
print("written", n, flush=True)
while True:  # stay alive, holding the database, until killed
    time.sleep(1)
"""


def _wait_for(proc: subprocess.Popen[str], predicate: object) -> str:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "writer exited early"
        if predicate(line):  # type: ignore[operator]
            return line


def test_read_command_beside_a_writer_keeps_its_wal(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    url = f"sqlite:///{db}"
    open_database(url).close()
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url, str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        _wait_for(writer, lambda line: line.strip() == "20")
        assert (tmp_path / "live.db-wal").exists()
        for args in (["status", "--offline"], ["db", "stats"]):
            done = subprocess.run([sys.executable, "-m", "daemon", "--db", url, *args],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert (tmp_path / "live.db-wal").exists(), f"`barcast {' '.join(args)}` deleted the writer's WAL"
            assert (tmp_path / "live.db-shm").exists()
        stop.touch()
        written = int(_wait_for(writer, lambda line: line.startswith("written")).split()[1])
        # Another process sees every bar the writer committed, while the writer still runs.
        check = open_database(url, create=False)
        with check.engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM bars")).scalar_one()
        check.close()
        assert stored == written
    finally:
        writer.kill()
        writer.wait()


def test_one_engine_per_file_per_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    a = open_database(url)
    b = open_database(str(tmp_path / "x.db"))
    assert a.engine is b.engine
    a.close()
    with b.engine.connect() as conn:  # closing one handle leaves the other working
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    b.close()
    c = open_database(url)
    assert c.engine is not a.engine
    c.close()


def test_header_check_opens_no_descriptor_of_its_own(tmp_path: Path) -> None:
    """The version/header check goes through SQLite: no plain open() of the database file."""
    import builtins
    import io
    import os

    url = f"sqlite:///{tmp_path / 'y.db'}"
    open_database(url).close()
    target = str(tmp_path / "y.db")
    opened: list[str] = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def spy(fn: object) -> object:
        def wrapper(file: object, *args: object, **kwargs: object) -> object:
            if str(file) == target:
                opened.append(str(file))
            return fn(file, *args, **kwargs)  # type: ignore[operator]
        return wrapper

    builtins.open, io.open, os.open = spy(real_open), spy(real_io_open), spy(real_os_open)  # type: ignore[assignment]
    try:
        open_database(url).close()
    finally:
        builtins.open, io.open, os.open = real_open, real_io_open, real_os_open  # type: ignore[assignment]
    assert opened == []

