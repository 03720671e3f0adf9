"""Retention as operators meet it: the [retention] config, `barcast db prune`, and the daemon's
background prune with its log line and metric."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select

from daemon import metrics
from daemon.config import load_config
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.live.notify import Notifier
from daemon.live.pruner import Pruner
from daemon.live.scoring import score
from daemon.live.service import Service
from db import leases, registry
from db.engine import open_database
from db.errors import ConfigError
from db.forecasts import insert_forecasts
from db.gaps import list_gaps, record_gap
from db.records import ModelInfo
from db.retention import LEASE, Busy
from db.schema import champion_history, forecast_scores, forecasts
from db.scores import insert_scores, unscored_steps
from tests.daemon.clirun import barcast
from tests.daemon.livehelp import SERIES, SIM_START, config_text, real_bars, seed_history
from tests.daemon.opsdata import PERSISTENCE, forecasts_for
from tests.db.retentiondata import seed

# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "why"), [
    ("forecasts_days = -1", "retention.forecasts_days: must be 0 (keep all) to 36500 days"),
    ("forecasts_days = 0.5", "retention.forecasts_days: must be 0 (keep all) or at least 1 day"),
    ("forecasts_days = 1.5", "retention.forecasts_days: 1.5 is less than the 1.94 days"),
    ("jobs_days = 'x'", "retention.jobs_days: expected a number"),
    ("models_days = 1e9", "retention.models_days: must be 0 (keep all) to 36500 days"),
    ("gaps_days = -2", "retention.gaps_days: must be 0 (keep all) to 36500 days"),
    ("every_hours = 0", "retention.every_hours: must be > 0"),
    ("batch_rows = 0", "retention.batch_rows: must be 1..1000000"),
    ("enabled = 'yes'", "retention.enabled: expected true or false"),
    ("bogus = 1", "unknown config key 'retention.bogus'"),
])
def test_bad_retention_settings_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                             why: str) -> None:
    cfg = tmp_path / "barcast.toml"
    cfg.write_text(f"[retention]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    assert why in str(info.value)
    res = barcast(capsys, "--config", str(cfg), "config", "check")
    assert res.code == 2 and why in res.err


def test_forecast_retention_covers_what_the_service_reads_back(tmp_path: Path) -> None:
    """An hourly series reads back (window + backfill_forecast_bars + horizon) hours: 23.3 days."""
    cfg = tmp_path / "barcast.toml"
    cfg.write_text('[[series]]\nexchange = "binance"\nsymbol = "BTC-USDT"\ninterval = "1h"\n'
                   "[retention]\nforecasts_days = 20\n")
    with pytest.raises(ConfigError, match=r"retention\.forecasts_days: 20 is less than the 23\.33 days"):
        load_config(cfg, env={})
    with pytest.raises(ConfigError, match="BARCAST_RETENTION__FORECASTS_DAYS"):
        load_config(None, env={"BARCAST_RETENTION__FORECASTS_DAYS": "1"})
    cfg.write_text("[retention]\nforecasts_days = 0\njobs_days = 0\nmodels_days = 0\n")  # keep everything
    assert load_config(cfg, env={}).retention.forecasts_days == 0
    assert load_config(None, env={}).retention.forecasts_days == 90  # the default prunes


# --- barcast db prune ---------------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path: Path, shared_dir: Path) -> str:
    url = f"sqlite:///{tmp_path / 'barcast.db'}"
    database = open_database(url)
    try:
        seed(database, shared_dir)
    finally:
        database.close()
    return url


def _rows(url: str) -> tuple[int, int]:
    database = open_database(url)
    try:
        with database.engine.connect() as conn:
            return (int(conn.execute(select(func.count()).select_from(forecasts)).scalar_one()),
                    int(conn.execute(select(func.count()).select_from(forecast_scores)).scalar_one()))
    finally:
        database.close()


def test_db_prune_dry_run_then_prune_and_vacuum(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = _rows(filled)
    dry = barcast(capsys, "--db", filled, "db", "prune", "--dry-run", "--forecasts-days", "2", "--format", "json")
    assert dry.code == 0, dry.err
    doc = json.loads(dry.out)
    assert doc["dry_run"] is True and doc["policy"]["forecasts_days"] == 2.0
    assert set(doc["rows"]) == {"forecast_scores", "forecasts", "calibration", "champion_history", "model_artifacts",
                                "models", "training_jobs", "feed_gaps"}
    assert doc["policy"]["gaps_days"] == 90.0
    assert doc["rows"]["forecasts"] > 0 and doc["rows"]["forecast_scores"] > 0 and doc["rows"]["training_jobs"] > 0
    assert _rows(filled) == before, "a dry run deletes nothing"
    table = barcast(capsys, "--db", filled, "db", "prune", "--dry-run", "--forecasts-days", "2")
    assert table.code == 0 and "would delete" in table.out and f"{doc['rows']['forecasts']}" in table.out
    assert _rows(filled) == before

    path = Path(filled.removeprefix("sqlite:///"))
    done = barcast(capsys, "--db", filled, "db", "prune", "--forecasts-days", "2", "--batch-rows", "500",
                   "--vacuum", "--format", "json")
    assert done.code == 0, done.err
    real = json.loads(done.out)
    assert real["rows"] == doc["rows"] and real["dry_run"] is False and real["vacuumed"] is True
    assert real["batches"] > doc["rows"]["forecasts"] // 500
    assert _rows(filled) == (before[0] - doc["rows"]["forecasts"], before[1] - doc["rows"]["forecast_scores"])
    assert real["size_bytes_after"] < real["size_bytes_before"]
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL is checkpointed into the smaller file"
    assert real["size_bytes_after"] - path.stat().st_size <= 65536  # the -shm index beside it
    again = barcast(capsys, "--db", filled, "db", "prune", "--forecasts-days", "2")
    assert again.code == 0 and "deleted 0 rows" in again.out


def test_db_prune_without_vacuum_says_the_file_does_not_shrink(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", filled, "db", "prune", "--forecasts-days", "2")
    assert res.code == 0, res.err
    assert "deleted" in res.out and "`barcast db prune --vacuum` gives the space back" in res.out


def test_db_prune_exit_codes(filled: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    before = _rows(filled)
    bad = barcast(capsys, "--db", filled, "db", "prune", "--forecasts-days", "-1")
    assert bad.code == 2 and "--forecasts-days" in bad.err
    short = barcast(capsys, "--db", filled, "db", "prune", "--forecasts-days", "1.5")
    assert short.code == 2 and "--forecasts-days 1.5 is less than the 1.94 days" in short.err
    both = barcast(capsys, "--db", filled, "db", "prune", "--dry-run", "--vacuum")
    assert both.code == 2 and "--vacuum with --dry-run" in both.err
    missing = barcast(capsys, "--db", str(tmp_path / "nope.db"), "db", "prune")
    assert missing.code == 2 and not (tmp_path / "nope.db").exists()
    database = open_database(filled)
    try:
        assert leases.acquire(database, LEASE, "daemon-x", timedelta(minutes=5))
        busy = barcast(capsys, "--db", filled, "db", "prune", "--forecasts-days", "2")
        assert busy.code == 1 and "daemon-x holds the retention lease" in busy.err
    finally:
        database.close()
    assert _rows(filled) == before


# --- the daemon's background prune --------------------------------------------------------------


def _metric(table: str) -> float:
    return metrics.REGISTRY.get_sample_value("barcast_pruned_rows_total", {"table": table}) or 0.0


@pytest.mark.slow
def test_running_daemon_prunes_in_the_background(shared_dir: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A real `run` against the exchange simulator: old forecasts (two days before the live bars)
    go within the first prune, the daemon's own forecasts stay, one log line per prune, and
    /metrics counts the rows."""
    end = SIM_START + timedelta(hours=6)
    played = real_bars(shared_dir, end)
    history_end = datetime(2020, 12, 20, tzinfo=UTC)
    db_url = f"sqlite:///{tmp_path / 'barcast.db'}"
    seed_history(db_url, played, history_end)
    database = open_database(db_url)
    history = [b for b in played if b.open_time < history_end]
    # forecasts of the first day, before what the window restore reads back, all scored; and one
    # of the newest stored bar, so the restore replays nothing (it stays: it is young)
    old = [forecasts_for(history, i, PERSISTENCE, history_end) for i in range(48, 200, 4)]
    insert_forecasts(database, old)
    insert_scores(database, score(unscored_steps(database, SERIES), history_end))
    insert_forecasts(database, [forecasts_for(history, len(history) - 1, PERSISTENCE, history_end)])
    seeded = (16 * len(old), 16 * len(old))
    assert _rows(db_url) == (seeded[0] + 16, seeded[1])
    database.close()
    caplog.set_level(logging.INFO, logger="barcast.retention")
    metric_before = {t: _metric(t) for t in ("forecasts", "forecast_scores")}
    seen: dict[str, object] = {}

    async def main() -> Service:
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(played))], speed=3000,
                                start=SIM_START.timestamp(), heartbeat_s=0.05)
        async with sim:
            cfg_path = tmp_path / "barcast.toml"
            cfg_path.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url)
                                + "[retention]\nforecasts_days = 1.3\nevery_hours = 0.0005\n")
            svc = Service(load_config(cfg_path, env={}), clock=sim.clock.now, notifier=Notifier(""))
            run = asyncio.create_task(svc.run())
            try:
                for _ in range(1200):  # the first prune comes every_hours (1.8 s) after start
                    last = svc.pruner.last if svc.pruner else None
                    if last and last["forecasts"]:
                        break
                    await asyncio.sleep(0.1)
                async with httpx.AsyncClient(base_url=svc.api.url) as client:  # type: ignore[union-attr]
                    seen["metrics"] = (await client.get("/metrics")).text
                    seen["status"] = (await client.get("/status")).json()
            finally:
                svc.stop_event.set()
                await asyncio.wait_for(run, 60)
            return svc

    svc = asyncio.run(main())
    assert svc.pruner is not None and svc.pruner.last is not None, "no prune ran"
    database = open_database(db_url)
    try:
        with database.engine.connect() as conn:
            oldest = conn.execute(select(func.min(forecasts.c.issued_at))).scalar_one()
            live = int(conn.execute(select(func.count()).select_from(forecasts)).scalar_one())
    finally:
        database.close()
    assert oldest is not None and oldest >= history_end - timedelta(minutes=5), "every old forecast went"
    assert live > 0, "the daemon's own forecasts stay"
    # the metric counts exactly the seeded rows, the log has one line per prune with the counts
    assert _metric("forecasts") - metric_before["forecasts"] == seeded[0]
    assert _metric("forecast_scores") - metric_before["forecast_scores"] == seeded[1]
    assert f'barcast_pruned_rows_total{{table="forecasts"}} {_metric("forecasts")}' in str(seen["metrics"])
    lines = [r for r in caplog.records if r.name == "barcast.retention" and r.getMessage() == "pruned"]
    assert lines and sum(r.forecasts for r in lines) == seeded[0]  # type: ignore[attr-defined]  # an extra= field
    assert all(hasattr(r, k) for r in lines for k in ("forecast_scores", "training_jobs", "seconds", "batches"))
    retention = seen["status"]["retention"]  # type: ignore[index]
    assert retention["enabled"] is True and retention["forecasts_days"] == 1.3 and retention["next_prune"]


def test_status_says_what_retention_does(filled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", filled, "status", "--offline")
    assert res.code == 0, res.err
    assert "retention: forecasts 90 d, jobs 30 d, models 90 d, gaps 90 d (the config's; no daemon answered)" in res.out
    cfg = tmp_path / "off.toml"
    cfg.write_text("[retention]\nenabled = false\nforecasts_days = 0\n")
    res = barcast(capsys, "--config", str(cfg), "--db", filled, "status", "--offline")
    assert res.code == 0, res.err
    assert ("retention: off: the daemon does not prune, the database grows until `barcast db prune` "
            "(forecasts kept for good, jobs 30 d, models 90 d, gaps 90 d)") in res.out


def test_pruner_logs_and_counts_champion_terms_and_feed_gaps(filled: str, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's prune: the `pruned` line and barcast_pruned_rows_total{table} carry the ended
    champion terms and feed gaps it deleted, as for every other table."""
    database = open_database(filled)
    long_ago = datetime.now(UTC) - timedelta(days=200)
    try:
        record_gap(database, SERIES, long_ago, long_ago + timedelta(hours=1), detected_at=long_ago)
        record_gap(database, SERIES, long_ago, long_ago + timedelta(hours=2))  # detected now: stays
        registry.register_model(database, ModelInfo("gone-champ", "linear", (SERIES,), None, None, {}, {}, None,
                                                    status="retired",  # older than the seeded: no rollback candidate
                                                    created_at=datetime(2020, 1, 1, tzinfo=UTC)))
        with database.begin() as conn:
            conn.execute(insert(champion_history).values(
                exchange=SERIES.exchange, symbol=SERIES.symbol, interval=SERIES.interval, model_id="gone-champ",
                started_at=long_ago, ended_at=long_ago + timedelta(days=1), reason="test"))
        before = {t: _metric(t) for t in ("feed_gaps", "champion_history", "models")}
        caplog.set_level(logging.INFO, logger="barcast.retention")
        done = asyncio.run(Pruner(load_config(None, env={}), database, "test").prune_once())
        assert done is not None and not isinstance(done, Busy)
        assert done.rows["feed_gaps"] == 1 and done.rows["champion_history"] == 1
        assert "gone-champ" not in {m.id for m in registry.list_models(database)}
        assert len(list_gaps(database)) == 1
    finally:
        database.close()
    line = [r for r in caplog.records if r.name == "barcast.retention" and r.getMessage() == "pruned"][-1]
    assert line.feed_gaps == 1 and line.champion_history == 1 and line.gaps_days == 90.0  # type: ignore[attr-defined]
    for table in before:
        assert _metric(table) - before[table] == done.rows[table]
