"""Chaos, small: `kill -9` of `barcast run` three times at random moments of an accelerated replay
(retraining on), restart each time; nothing lost, nothing twice, no orphaned child. The full-size
run (>= 10 kills) is bench/chaos.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.daemon.chaos import run_chaos

pytestmark = pytest.mark.slow

KILLS = 3


def _check(shared_dir: Path, tmp_path: Path, db_url: str, seed: int, speed: float) -> None:
    report = asyncio.run(run_chaos(shared_dir, tmp_path, db_url, kills=KILLS, seed=seed, speed=speed, hours=6))
    print(report.summary())
    assert report.kills == KILLS and report.restarts == KILLS + 1
    assert report.bars_wrong == 0, report.summary()
    assert report.forecasts_missing == [], report.summary()
    assert report.bars_forecast_twice == 0 and report.log_duplicated == 0, report.summary()
    assert report.log_missing == 0 and report.log_extra == 0, report.summary()
    assert report.first_bar_unforecast == [], report.summary()
    assert report.orphans == [], report.summary()
    assert report.clean and report.rows_lost == 0


def test_kill_9_chaos_on_sqlite(shared_dir: Path, tmp_path: Path) -> None:
    _check(shared_dir, tmp_path, f"sqlite:///{tmp_path / 'barcast.db'}", seed=12, speed=600)


@pytest.mark.postgres
def test_kill_9_chaos_on_postgresql(shared_dir: Path, tmp_path: Path, pg_db_url: str) -> None:
    # slower: each forecast batch costs more round trips on PostgreSQL, and a restarted daemon first
    # forecasts the bars backfilled while it was down
    _check(shared_dir, tmp_path, pg_db_url, seed=13, speed=200)
