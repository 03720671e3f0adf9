"""Three `barcast run` processes on one PostgreSQL database, 60 series on one simulated exchange:
each series owned by one daemon (about a third each), every (series, bar) forecast exactly once,
bars gap-free; `kill -9` of one hands its series to the others within TTL + one bar, with no
double forecast and no lost bar; restarting it takes its share back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.daemon.clusterhelp import Scenario, check, run_cluster

pytestmark = pytest.mark.slow


def test_three_daemons_share_sixty_series_and_survive_kill_9(pg_db_url: str, tmp_path: Path) -> None:
    sc = Scenario()
    run, series = asyncio.run(run_cluster(pg_db_url, tmp_path, sc))
    logs = {n: p.read_text()[-2000:] for n, p in run.logs.items()}
    assert run.return_codes[f"{run.killed}-killed"] == -9
    assert all(rc == 0 for n, rc in run.return_codes.items() if not n.endswith("-killed")), (run.return_codes, logs)
    # roughly a third each, before the kill and after the restart (the same rendezvous winners)
    for balance in (run.balance_before, run.balance_after):
        assert sorted(balance) == ["d1", "d2", "d3"] and all(10 <= n <= 30 for n in balance.values()), balance
    assert run.balance_after == run.balance_before
    assert sorted(run.balance_during) == ["d1", "d3"] and sum(run.balance_during.values()) == sc.series
    # taken over within TTL + one bar (plus one heartbeat round for the survivor to notice)
    assert run.takeover_s is not None and run.takeover_s <= sc.ttl_s + sc.bar_s + sc.heartbeat_s, run.takeover_s
    counts = check(pg_db_url, run, series)
    # every daemon issued forecasts, the survivors for the victim's series while it was down
    assert set(counts["issued_by"]) == {"d1", "d2", "d3"}, counts
