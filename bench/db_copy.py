"""How fast `barcast db copy` moves a database that ran for months, and in how much memory.

    python bench/db_copy.py --pg postgresql://USER:PASS@HOST/DB [--days 120] [CSV]

Fills a temporary SQLite file as bench/retention.py does (one 5-minute series over `--days` days:
the whole CSV of real bars, a forecast with a quantile fan on every bar, scored, a retired
challenger and a finished job a day, calibration states), then runs the real command, each in
its own process: SQLite -> a fresh PostgreSQL database (created beside `--pg`'s, dropped after)
-> a new SQLite file. Prints rows, seconds, rows/s and the copying process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retention import DEFAULT_CSV, KEY, fill
from db.bars import read_bars
from db.engine import normalise_url, open_database
from db.stats import database_size_bytes

ROOT = Path(__file__).resolve().parents[1]
#: The copies run this tree's barcast.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
#: Runs a command and prints its peak RSS (KiB) last on stderr: each copy measured on its own.
_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")


def copy(src: str, dst: str, artifacts: Path) -> tuple[dict[str, object], float, float]:
    """One `barcast db copy` in a process of its own: its JSON report, wall seconds, peak RSS (MB)."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "daemon", "--db", src, "db", "copy",
                          "--to", dst, "--artifacts-dir", str(artifacts), "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT, env=ENV)
    wall = time.monotonic() - t0
    if out.returncode:
        raise SystemExit(f"copy failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout), wall, int(out.stderr.split()[-1]) / 1024


def line(label: str, doc: dict[str, object], wall: float, rss: float) -> None:
    print(f"{label:<22} {doc['rows']:>10,} rows  copy {doc['seconds']:>6.1f} s  {doc['rows_per_s']:>8,} rows/s  "
          f"command {wall:5.1f} s  peak RSS {rss:6.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--days", type=int, default=120, help="days of forecasts, models and jobs to fill")
    ap.add_argument("--pg", required=True, help="PostgreSQL URL whose server gets a scratch database")
    ap.add_argument("--source", type=Path, help="the filled SQLite file: kept, and reused when it exists")
    args = ap.parse_args()
    name = f"barcast_copy_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(args.pg), isolation_level="AUTOCOMMIT")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.source or Path(tmp) / "source.db"
        src = f"sqlite:///{path.resolve()}"
        t0 = time.monotonic()
        database = open_database(src)
        if not path.exists() or not database_size_bytes(database) or not read_bars(database, KEY, limit=1):
            fill(database, args.csv, args.days, datetime.now(UTC))
            print(f"filled in {time.monotonic() - t0:.0f} s")
        size = database_size_bytes(database) or 0
        database.close()
        print(f"source {path}: {size / 1e6:.1f} MB")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        pg = normalise_url(args.pg).set(database=name).render_as_string(hide_password=False)
        try:
            doc, wall, rss = copy(src, pg, Path(tmp) / "models")
            print("rows per table: " + ", ".join(f"{t['table']} {t['source']:,}" for t in doc["tables"]  # type: ignore[attr-defined]
                                                 if t["source"]))
            line("SQLite -> PostgreSQL", doc, wall, rss)
            doc, wall, rss = copy(pg, f"sqlite:///{Path(tmp) / 'back.db'}", Path(tmp) / "models")
            line("PostgreSQL -> SQLite", doc, wall, rss)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
