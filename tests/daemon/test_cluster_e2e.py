"""Three `barcast run` processes on one PostgreSQL database, 15 series on one simulated exchange
(bench/cluster.py runs the same scenario with 60): each series owned by one daemon (a share
each), every (series, bar) forecast exactly once, bars gap-free and exact; `kill -9` of one
hands its series to the others with no double forecast and no lost bar; restarting it takes its
share back. (How fast the takeover is, is printed by the bench: no timed assertion here.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from db.engine import open_database
from db.gaps import list_gaps
from tests.daemon.clusterhelp import Scenario, check, run_cluster, run_join

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_three_daemons_share_the_series_and_survive_kill_9(pg_db_url: str, tmp_path: Path) -> None:
    sc = Scenario(series=15)
    run, series = asyncio.run(run_cluster(pg_db_url, tmp_path, sc))
    logs = {n: p.read_text()[-3000:] for n, p in run.logs.items()}
    assert run.return_codes[f"{run.killed}-killed"] == -9
    assert all(rc == 0 for n, rc in run.return_codes.items() if not n.endswith("-killed")), (run.return_codes, logs)
    # every daemon owns a share, before the kill and after the restart (the same rendezvous winners)
    for balance in (run.balance_before, run.balance_after):
        assert sorted(balance) == ["d1", "d2", "d3"] and sum(balance.values()) == sc.series, balance
    assert run.balance_after == run.balance_before
    assert sorted(run.balance_during) == ["d1", "d3"] and sum(run.balance_during.values()) == sc.series
    counts = check(pg_db_url, run, series)
    # every daemon issued forecasts, the survivors for the victim's series while it was down
    assert set(counts["issued_by"]) == {"d1", "d2", "d3"}, counts
    assert counts["victim_series_by_survivors"] > 0, counts


def test_a_daemon_joining_costs_the_series_the_first_one_keeps_no_gap(pg_db_url: str, tmp_path: Path) -> None:
    """One daemon owns every series and ingests them live; a second joins and takes its share.
    The series the first keeps keep their connection and bar in progress: no gap recorded, bars
    the exchange's. Only the series handed on have one each (the takeover), filled. Before, the
    first daemon restarted every feed at the change: each series it kept lost its bar in
    progress (rebuilt from REST) and recorded a 1-bar gap."""
    sc = Scenario(series=8, daemons=2, bars_before_kill=3, bars_after_rebalance=4)
    run, series = asyncio.run(run_join(pg_db_url, tmp_path, sc))
    logs = {n: p.read_text()[-3000:] for n, p in run.logs.items()}
    assert all(rc == 0 for rc in run.return_codes.values()), (run.return_codes, logs)
    assert run.balance_before == {"d1": sc.series} and sorted(run.balance_after) == ["d1", "d2"], run
    check(pg_db_url, run, series)  # bars gap-free and the exchange's, one forecast set per bar
    db = open_database(pg_db_url)
    try:
        gaps = list_gaps(db)
    finally:
        db.close()
    moved = run.killed_series
    assert not [g for g in gaps if g.series not in moved], gaps
    assert {g.series for g in gaps} == moved and all(g.filled_at is not None for g in gaps), gaps
