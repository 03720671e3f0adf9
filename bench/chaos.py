"""Chaos, full size: `kill -9` of `barcast run` at >= 10 random moments of an accelerated replay
through the exchange simulator (retraining on), restart after each, on SQLite and (with
BARCAST_TEST_PG_URL) PostgreSQL; prints kills survived and rows lost per engine.

    python bench/chaos.py [--kills 10] [--seed 1] [--hours 12] [--engines sqlite,postgresql]

Exit status 1 if anything was lost, duplicated or orphaned.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from db.engine import normalise_url  # noqa: E402
from tests.daemon.chaos import run_chaos  # noqa: E402


def _pg_database(server: str) -> tuple[str, str]:
    name = f"barcast_chaos_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return normalise_url(server).set(database=name).render_as_string(hide_password=False), name


def _drop(server: str, name: str) -> None:
    admin = create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=float, default=12.0, help="replayed hours after the simulator start")
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("BARCAST_SHARED_DIR", ROOT.parent / "shared")))
    args = ap.parse_args()
    failed = False
    for engine in args.engines.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"barcast-chaos-{engine}-"))
        drop = None
        if engine == "sqlite":
            url, speed = f"sqlite:///{work / 'barcast.db'}", 600.0
        else:
            server = os.environ.get("BARCAST_TEST_PG_URL")
            if not server:
                print("postgresql: skipped (BARCAST_TEST_PG_URL is not set)")
                continue
            url, name = _pg_database(server)
            drop, speed = (server, name), 300.0
        try:
            report = asyncio.run(run_chaos(args.shared, work, url, kills=args.kills, seed=args.seed,
                                           hours=args.hours, speed=speed, log=True))
        finally:
            if drop is not None:
                _drop(*drop)
        print(f"{engine}: {report.summary()}")
        if report.forecasts_missing:
            print(f"  bars without forecast: {[t.isoformat() for t in report.forecasts_missing[:10]]}")
        failed = failed or not report.clean or report.kills != args.kills
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
