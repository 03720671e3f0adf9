"""Three `barcast run` daemons on one PostgreSQL database, 60 series on one simulated exchange at
150x speed (a bar every 2 s): the full-size run of tests/daemon/test_cluster_e2e.py.

    python bench/cluster.py [--series 60] [--daemons 3] [--speed 150] [--pg URL]

`--pg` (default `$BARCAST_TEST_PG_URL`) is a server URL; the run gets a database of its own,
dropped afterwards. Prints the ownership balance before, during and after a `kill -9` of one
daemon, how long the takeover and the rebalance took against the lease TTL and the bar, and the
exactly-once counts (it fails, like the test, on a double forecast, a lost bar or a wrong bar).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.engine import normalise_url
from tests.daemon.clusterhelp import Scenario, check, run_cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=60)
    ap.add_argument("--daemons", type=int, default=3)
    ap.add_argument("--speed", type=float, default=150.0)
    ap.add_argument("--pg", default=os.environ.get("BARCAST_TEST_PG_URL", ""))
    args = ap.parse_args()
    if not args.pg:
        sys.exit("give --pg postgresql://… or set BARCAST_TEST_PG_URL")
    sc = Scenario(series=args.series, daemons=args.daemons, speed=args.speed)
    name = f"barcast_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(args.pg), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalise_url(args.pg).set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run, series = asyncio.run(run_cluster(url, Path(tmp), sc))
            bad = {n: rc for n, rc in run.return_codes.items() if rc != (-9 if n.endswith("-killed") else 0)}
            if bad:
                for n, p in run.logs.items():
                    print(f"--- {n}\n{p.read_text()[-3000:]}")
                sys.exit(f"daemons exited badly: {bad}")
            counts = check(url, run, series)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(f"{sc.series} series, {sc.daemons} daemons, bar every {sc.bar_s:.1f} s, lease TTL {sc.ttl_s} s, "
          f"heartbeat {sc.heartbeat_s} s")
    print(f"balance before {run.balance_before}, during {run.balance_during}, after {run.balance_after}")
    print(f"kill -9 {run.killed} ({len(run.killed_series)} series): taken over in {run.takeover_s:.2f} s "
          f"= TTL + {(run.takeover_s or 0) - sc.ttl_s:.2f} s (budget TTL + 1 bar = {sc.ttl_s + sc.bar_s:.1f} s)")
    print(f"restart: rebalanced in {run.rebalance_s:.2f} s")
    print(f"exactly once: {counts['forecast_sets']} forecast sets over {counts['bars_per_series']} live bars "
          f"x {sc.series} series, issued by {counts['issued_by']}, "
          f"{counts['victim_series_by_survivors']} of the killed daemon's sets by the survivors; no gap, no double")


if __name__ == "__main__":
    main()
