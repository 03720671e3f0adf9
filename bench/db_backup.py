"""How to back up a live SQLite database: SQLite's online backup API vs `VACUUM INTO`, each while
another process keeps writing bars and forecasts, as a daemon does.

    python bench/db_backup.py [--days 120] [--db PATH] [CSV]

Fills a temporary SQLite file as bench/retention.py does (unless --db names one already filled),
starts a writer process (one bar and its forecast per transaction, each commit timed), then runs
each method twice: seconds, the size it wrote, `PRAGMA integrity_check` seconds on the result, the
writer's commits meanwhile and its slowest commit (how long the backup made the live writer
wait), and the -wal size it left. The methods:

- `backup api, held snapshot`: what `barcast db backup` does (db/backup.py): one read transaction,
  steps of PAGES_PER_STEP pages;
- `backup api, steps only`: the same steps without the held transaction: every commit of the
  writer restarts the copy (stopped after 60 s);
- `backup api, one step`: `pages=-1`, no progress;
- `VACUUM INTO`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retention import DEFAULT_CSV, KEY, fill, forecast
from db.backup import PAGES_PER_STEP, copy_pages, seal
from db.bars import read_bars, upsert_bars
from db.engine import open_database
from db.forecasts import insert_forecasts


def writer(path: Path, stop: Path, log: Path) -> None:
    """Until `stop` exists: a new bar after the newest, then its forecast, each one transaction;
    appends `wall_clock commit_ms` per commit to `log`."""
    database = open_database(f"sqlite:///{path}", create=False)
    bars = read_bars(database, KEY, limit=64, newest_first=True)[::-1]
    with log.open("a") as out:
        for i in itertools.count():
            if stop.exists():
                break
            last = bars[-1]
            close = last.close * Decimal(str(1 + 0.001 * math.sin(i)))
            bar = replace(last, open_time=last.open_time + KEY.step, open=last.close, high=max(last.close, close),
                          low=min(last.close, close), close=close, source="live")
            bars = [*bars[1:], bar]
            t0 = time.monotonic()
            upsert_bars(database, [bar])
            t1 = time.monotonic()
            insert_forecasts(database, [forecast(bars, len(bars) - 1, "har-bench")])
            t2 = time.monotonic()
            out.write(f"{time.time():.6f} {(t1 - t0) * 1000:.3f}\n{time.time():.6f} {(t2 - t1) * 1000:.3f}\n")
            out.flush()
            time.sleep(0.002)
    database.close()


def commits(log: Path, since: float, until: float) -> list[float]:
    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    return [float(ms) for wall, ms in rows if since <= float(wall) <= until]


def backup_held(src: Path, dst: Path) -> None:
    copy_pages(f"sqlite:///{src}", dst)


def backup_steps_only(src: Path, dst: Path) -> None:
    conn = sqlite3.connect(src, timeout=15)
    started = time.monotonic()
    restarts = [0]
    seen = [10**12]

    def progress(_status: int, remaining: int, _total: int) -> None:
        if remaining > seen[0]:
            restarts[0] += 1
        seen[0] = remaining
        if time.monotonic() - started > 60:
            raise RuntimeError(f"not done after 60 s ({restarts[0]} restarts)")

    out = sqlite3.connect(dst)
    try:
        conn.backup(out, pages=PAGES_PER_STEP, progress=progress)
    except RuntimeError as exc:
        print(f"    backup api, steps only: {exc}")
        raise
    finally:
        out.close()
        conn.close()
    print(f"    backup api, steps only: {restarts[0]} restarts")


def backup_one_step(src: Path, dst: Path) -> None:
    conn = sqlite3.connect(src, timeout=15)
    out = sqlite3.connect(dst)
    conn.backup(out)
    out.close()
    conn.close()


def vacuum_into(src: Path, dst: Path) -> None:
    conn = sqlite3.connect(src, timeout=15)
    conn.execute("VACUUM INTO ?", (str(dst),))
    conn.close()


#: In this order, twice; the one that never finishes under a writer last (its minute grows the file).
METHODS: list[tuple[str, Callable[[Path, Path], None]]] = [
    ("backup api, held snapshot", backup_held),
    ("backup api, one step", backup_one_step),
    ("VACUUM INTO", vacuum_into),
] * 2 + [("backup api, steps only", backup_steps_only)]


def run(path: Path, tmp: Path) -> None:
    log, stop = tmp / "writer.log", tmp / "stop"
    proc = subprocess.Popen([sys.executable, __file__, "--writer", str(path), str(stop), str(log)])
    try:
        while not log.exists() or len(log.read_text().splitlines()) < 200:
            time.sleep(0.1)
        t0 = time.time()
        time.sleep(3)
        idle = commits(log, t0, time.time())
        print(f"{'writer alone (3 s)':<28} {len(idle):>6} commits, slowest {max(idle):7.1f} ms, "
              f"median {statistics.median(idle):.2f} ms")
        for name, method in METHODS:
            dst = tmp / f"{name.replace(' ', '-').replace(',', '')}.db"
            t0 = time.time()
            try:
                method(path, dst)
            except RuntimeError:
                dst.unlink(missing_ok=True)
                continue
            t1 = time.time()
            during = commits(log, t0, t1)
            wal = Path(f"{path}-wal")
            t2 = time.monotonic()
            sealed = seal(dst)
            check = time.monotonic() - t2
            print(f"{name:<28} {t1 - t0:6.1f} s, {sealed.bytes / 1e6:7.1f} MB, integrity_check {check:.1f} s; "
                  f"writer: {len(during):>5} commits meanwhile, slowest {max(during, default=0):7.1f} ms; "
                  f"-wal {wal.stat().st_size / 1e6 if wal.exists() else 0:.1f} MB")
            dst.unlink()
    finally:
        stop.touch()
        proc.wait(timeout=60)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--writer":
        writer(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--days", type=int, default=120, help="days of forecasts, models and jobs to fill")
    ap.add_argument("--db", type=Path, help="an already filled SQLite file (it gets the writer's rows)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "live.db"
        if args.db is None:
            database = open_database(f"sqlite:///{path}")
            t0 = time.monotonic()
            fill(database, args.csv, args.days, datetime.now(UTC))
            database.close()
            print(f"filled in {time.monotonic() - t0:.0f} s")
        print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB, {PAGES_PER_STEP} pages a step")
        run(path, Path(tmp))


if __name__ == "__main__":
    main()
