"""`barcast db copy`: an installation moved from SQLite to PostgreSQL (and back) answers every read
the same way, its models load from the new database on another machine, and the copy refuses a
target with rows, an old source schema and a live daemon."""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.command import upgrade as alembic_upgrade
from sqlalchemy import create_engine, func, select, text

from db import cluster, copy, jobs, migrate, registry
from db.bars import read_bars
from db.calibration import load_states, store_states
from db.engine import Database, create_db_engine, normalise_url, open_database
from db.forecasts import insert_forecasts, store_new_forecasts
from db.gaps import mark_gap_filled, record_gap
from db.records import CalibrationState
from db.schema import champion_history, forecast_scores, model_artifacts
from db.stats import table_counts
from tests.conftest import drop_database
from tests.daemon.clirun import barcast, har_champion
from tests.daemon.opsdata import BTC, DRIFT, ETH, PERSISTENCE, forecasts_for, ops_db_url
from trainer.artifact_store import DB_PREFIX, local_path
from trainer.artifacts import load_artifact

#: The read paths a daemon's users see, asked of source and target alike.
READS = (
    ("forecasts", "--last", "1000", "--format", "json"),
    ("forecasts", "--latest", "--format", "json"),
    ("bars", "--series", "binance:BTC-USDT", "--since", "2021-07-10", "--format", "csv"),
    ("bars", "--series", "binance:ETH-USDT", "--limit", "500", "--format", "json"),
    ("gaps", "--format", "json"),
)
#: Computed by SQL aggregates, whose float sums differ between the engines in the last digit.
ACCURACY = ("accuracy", "--window", "all", "--format", "json")


@pytest.fixture
def source(tmp_path: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           capsys: pytest.CaptureFixture[str]) -> str:
    """An installation that ran for a while on SQLite: real bars of two series, forecasts with
    quantile fans and their scores, a `har` model trained on the stored bars and promoted champion
    (its artifact a local directory), its calibration state, a feed gap, training jobs, the lease of
    a daemon that stopped cleanly."""
    url = ops_db_url(tmp_path, shared_dir, tmp_path_factory.getbasetemp())
    har = har_champion(capsys, url, tmp_path / "models")
    database = open_database(url, create=False)
    try:
        store_states(database, [CalibrationState(BTC, har, {"scale": [1.0, 1.25], "n": 42},
                                                 datetime(2021, 7, 17, 22, tzinfo=UTC))])
        start = datetime(2021, 7, 17, 12, tzinfo=UTC)
        record_gap(database, BTC, start, start + timedelta(minutes=30), detected_at=start + timedelta(hours=1))
        mark_gap_filled(database, BTC, start, start + timedelta(minutes=30), filled_at=start + timedelta(hours=1))
        record_gap(database, ETH, start, start + timedelta(minutes=10), detected_at=start + timedelta(hours=2))
        done = jobs.enqueue(database, "binance:BTC-USDT:5m", str(BTC), "schedule")
        jobs.enqueue(database, "binance:ETH-USDT:5m", str(ETH), "first model")
        claimed = jobs.claim(database, "old-daemon", series=None, per_daemon=1, global_cap=1,
                             lease=timedelta(minutes=5))
        assert [j.id for j in claimed] == [done]
        jobs.finish(database, claimed[0].id, "old-daemon", {"promoted": True})
        cluster.claim(database, "old-daemon", [BTC, ETH], timedelta(seconds=60))
        cluster.leave(database, "old-daemon")
    finally:
        database.close()
    return url


def _reads(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for argv in READS:
        res = barcast(capsys, "--db", url, *argv)
        assert res.code == 0, (argv, res.err)
        out[" ".join(argv)] = res.out
    res = barcast(capsys, "--db", url, *ACCURACY)
    assert res.code == 0, res.err
    out["accuracy"] = json.loads(res.out)
    return out


def _close(a: object, b: object) -> bool:
    """Equal, floats to 12 significant digits (nested JSON)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _same_reads(got: dict[str, object], want: dict[str, object]) -> None:
    assert {k: v for k, v in got.items() if k != "accuracy"} == {k: v for k, v in want.items() if k != "accuracy"}
    assert want["accuracy"] and _close(got["accuracy"], want["accuracy"])


def _models(capsys: pytest.CaptureFixture[str], url: str) -> list[dict[str, object]]:
    res = barcast(capsys, "--db", url, "models", "list", "--format", "json")
    assert res.code == 0, res.err
    return [{k: v for k, v in m.items() if k != "artifact_path"} for m in json.loads(res.out)]


def _copy(capsys: pytest.CaptureFixture[str], src: str, dst: str, *more: str) -> dict[str, Any]:
    res = barcast(capsys, "--db", src, "db", "copy", "--to", dst, "--format", "json", *more)
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["ok"] and doc["problems"] == []
    assert all(t["source"] == t["target"] for t in doc["tables"] if t["table"] != "model_artifacts"), doc["tables"]
    return doc


def _same_data(a: Database, b: Database) -> None:
    """Every bar equal to the decimal text; ids, champion terms, calibration, jobs as they were."""
    for key in (BTC, ETH):
        ours, theirs = read_bars(a, key), read_bars(b, key)
        assert len(ours) == len(theirs) > 60_000
        assert ours == theirs
        assert [(str(x.open), str(x.high), str(x.low), str(x.close), str(x.volume)) for x in ours] == [
            (str(x.open), str(x.high), str(x.low), str(x.close), str(x.volume)) for x in theirs]
        assert registry.history(a, key) == registry.history(b, key)
    assert load_states(a) == load_states(b)
    assert jobs.list_jobs(a) == jobs.list_jobs(b)
    assert cluster.series_leases(a) == cluster.series_leases(b)
    nulls = "SELECT count(*) FROM forecasts WHERE levels IS NULL"  # SQL NULL and JSON null stay apart
    with a.engine.connect() as conn_a, b.engine.connect() as conn_b:
        assert conn_a.execute(text(nulls)).scalar_one() == conn_b.execute(text(nulls)).scalar_one()
    for conn_a, conn_b in ((a.engine.connect(), b.engine.connect()),):
        with conn_a, conn_b:
            for table in copy.tables():
                if table.name == "model_artifacts":
                    continue
                cols = [c for c in table.columns if c.name != "artifact_path"]  # where the files are: differs
                stmt = select(*cols).order_by(*table.primary_key.columns)
                assert conn_a.execute(stmt).all() == conn_b.execute(stmt).all(), table.name


@contextmanager
def scratch_pg(server_url: str) -> Iterator[str]:
    """One more empty PostgreSQL database (as the pg_db_url fixture makes one), dropped after."""
    name = f"barcast_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield normalise_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(admin, name)
        admin.dispose()


def test_sqlite_to_postgresql_and_back(source: str, pg_url: str, pg_db_url: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    before = _reads(capsys, source)
    models_before = _models(capsys, source)
    doc = _copy(capsys, source, pg_db_url)
    src, pg = open_database(source, create=False), open_database(pg_db_url, create=False)
    try:
        champion = registry.champion(pg, BTC)
        assert champion is not None and champion.arch == "har"
        # each table was analysed as it was copied (without statistics PostgreSQL checked every
        # score's foreign key through the series index: all forecasts of the series per score)
        with pg.engine.connect() as conn:
            assert conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'forecasts'")).scalar_one() > 0
        assert doc["artifacts"]["to_database"] == [champion.id]
        # read paths give the same answers on the target
        _same_reads(_reads(capsys, pg_db_url), before)
        assert _models(capsys, pg_db_url) == models_before
        _same_data(src, pg)
        # the champion loads from the database on a machine that never saw its directory
        assert champion.artifact_path == DB_PREFIX + champion.id
        elsewhere = local_path(pg, champion.artifact_path, tmp_path / "other-machine")
        assert elsewhere == tmp_path / "other-machine" / champion.id
        original = registry.get_model(src, champion.id).artifact_path
        assert original is not None
        assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == {
            p.name: p.read_bytes() for p in Path(original).iterdir()}
        assert load_artifact(elsewhere, window=256, horizon=16).arch == "har"
    finally:
        src.close()
        pg.close()

    # and back: PostgreSQL -> SQLite, the files where a SQLite install looks for them
    back = f"sqlite:///{tmp_path / 'back.db'}"
    doc = _copy(capsys, pg_db_url, back, "--artifacts-dir", str(tmp_path / "back-models"))
    assert doc["artifacts"]["to_files"] == [champion.id]
    _same_reads(_reads(capsys, back), before)
    assert _models(capsys, back) == models_before
    src, pg, home = (open_database(u, create=False) for u in (source, pg_db_url, back))
    try:
        _same_data(src, home)
        path = registry.get_model(home, champion.id).artifact_path
        assert path == str((tmp_path / "back-models" / champion.id).resolve())
        assert load_artifact(path, window=256, horizon=16).arch == "har"
        assert table_counts(home)["model_artifacts"] == 0  # on SQLite the directory is the only copy
        money = "SELECT open, high, low, close, volume FROM bars ORDER BY exchange, symbol, open_time"
        with src.engine.connect() as conn_a, home.engine.connect() as conn_b:  # the stored decimal text itself
            assert conn_a.execute(text(money)).all() == conn_b.execute(text(money)).all()
    finally:
        for d in (src, pg, home):
            d.close()

    # PostgreSQL -> PostgreSQL: the stored artifacts go as rows (bytea by COPY), digest for digest
    with scratch_pg(pg_url) as pg2_url:
        _copy(capsys, pg_db_url, pg2_url)
        _same_reads(_reads(capsys, pg2_url), before)
        pg, pg2 = open_database(pg_db_url, create=False), open_database(pg2_url, create=False)
        try:
            _same_data(pg, pg2)
            stored = select(model_artifacts).order_by(model_artifacts.c.model_id, model_artifacts.c.name)
            with pg.engine.connect() as conn_a, pg2.engine.connect() as conn_b:
                assert conn_a.execute(stored).all() == conn_b.execute(stored).all() != []
            elsewhere = local_path(pg2, DB_PREFIX + champion.id, tmp_path / "third-machine")
            assert load_artifact(elsewhere, window=256, horizon=16).arch == "har"
        finally:
            pg.close()
            pg2.close()

    pg = open_database(pg_db_url, create=False)
    try:
        # PostgreSQL's id sequences continue after the copied ids: new rows get new ids
        with pg.engine.connect() as conn:
            top = conn.execute(select(func.max(champion_history.c.id))).scalar_one()
            seq = conn.execute(text("SELECT max(seq) FROM forecast_seq")).scalar_one()
        registry.promote(pg, f"{DRIFT}-btc-usdt", BTC, reason="after the copy")  # the one before har
        with pg.engine.connect() as conn:
            assert conn.execute(select(func.max(champion_history.c.id))).scalar_one() == top + 1
        gap = record_gap(pg, BTC, datetime(2021, 7, 18, tzinfo=UTC), datetime(2021, 7, 18, 1, tzinfo=UTC))
        assert gap == 3 and jobs.enqueue(pg, "g", str(BTC), "new") == 3  # two of each were copied
        bars = read_bars(pg, BTC)
        new = store_new_forecasts(pg, [forecasts_for(bars, len(bars) - 1, "after-copy", datetime.now(UTC))])
        assert [f.seq for f in new] == [seq + 1]
    finally:
        pg.close()


def test_sqlite_to_sqlite_copy_keeps_everything(source: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The same checks without a PostgreSQL server: the copy is exact and the table shows it."""
    before = _reads(capsys, source)
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    res = barcast(capsys, "--db", source, "db", "copy", "--to", target)
    assert res.code == 0, res.err
    assert "forecast_scores" in res.out and "rows/s" in res.out and "next: point [database] url" in res.out
    _same_reads(_reads(capsys, target), before)
    src, dst = open_database(source, create=False), open_database(target, create=False)
    try:
        _same_data(src, dst)
        assert table_counts(src) == table_counts(dst)
    finally:
        src.close()
        dst.close()


def _small_source(tmp_path: Path, shared_dir: Path) -> str:
    url = f"sqlite:///{tmp_path / 'small.db'}"
    from db.bars import upsert_bars
    from db.csvbars import read_bars_csv

    bars = read_bars_csv(shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv", exchange="binance",
                         symbol="BTC-USDT", interval="5m")[:300]
    database = open_database(url)
    upsert_bars(database, bars)
    database.close()
    return url


def test_refuses_a_target_with_rows_and_changes_nothing(tmp_path: Path, shared_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = _small_source(tmp_path, shared_dir)
    target = tmp_path / "used.db"
    database = open_database(str(target))
    record_gap(database, BTC, datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, 1, tzinfo=UTC))
    database.close()
    res = barcast(capsys, "--db", src, "db", "copy", "--to", str(target))
    assert res.code == 2 and "is not empty: table feed_gaps holds 1 rows" in res.err, res.err
    database = open_database(str(target), create=False)
    assert table_counts(database) == {**{t.name: 0 for t in copy.tables()}, "feed_gaps": 1}
    database.close()
    res = barcast(capsys, "--db", src, "db", "copy", "--to", src)
    assert res.code == 2 and "is the source database itself" in res.err, res.err


def test_refuses_an_old_source_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", str(tmp_path / "typo.db"), "db", "copy", "--to", str(tmp_path / "new.db"))
    assert res.code == 2 and "typo.db does not exist" in res.err, res.err
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "new.db").exists()
    old = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_db_engine(old)
    with engine.begin() as conn:
        alembic_upgrade(migrate._alembic_config(conn), "0009")
    engine.dispose()
    res = barcast(capsys, "--db", old, "db", "copy", "--to", str(tmp_path / "new.db"))
    assert res.code == 1 and "run `barcast db upgrade`" in res.err, res.err
    assert not (tmp_path / "new.db").exists()


def test_an_empty_target_of_an_older_schema_is_upgraded(tmp_path: Path, shared_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = _small_source(tmp_path, shared_dir)
    target = f"sqlite:///{tmp_path / 'old-empty.db'}"
    engine = create_db_engine(target)
    with engine.begin() as conn:
        alembic_upgrade(migrate._alembic_config(conn), "0009")
    engine.dispose()
    _copy(capsys, src, target)
    database = open_database(target, create=False)
    assert len(read_bars(database, BTC)) == 300
    database.close()


def test_refuses_while_a_daemon_is_live(tmp_path: Path, shared_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = _small_source(tmp_path, shared_dir)
    database = open_database(src, create=False)
    now = datetime.now(UTC)
    cluster.heartbeat(database, cluster.Instance("host-a-1234", "host-a", 1234, now, now, now),
                      timedelta(seconds=60))
    res = barcast(capsys, "--db", src, "db", "copy", "--to", str(tmp_path / "new.db"))
    assert res.code == 1 and "a daemon is running on" in res.err and "host-a-1234 (host host-a, pid 1234" in res.err
    assert not (tmp_path / "new.db").exists()
    cluster.leave(database, "host-a-1234")  # its clean stop
    database.close()
    _copy(capsys, src, str(tmp_path / "new.db"))


def test_a_failed_copy_keeps_no_rows_and_can_be_run_again(tmp_path: Path, shared_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A row the target refuses (a score whose forecast is gone, written with foreign keys off)
    stops the copy naming the table; the target holds no rows, so the same command runs again."""
    src = _small_source(tmp_path, shared_dir)
    database = open_database(src, create=False)
    bars = read_bars(database, BTC)
    insert_forecasts(database, [forecasts_for(bars, 100, PERSISTENCE, datetime(2021, 1, 1, tzinfo=UTC))])
    database.close()
    raw = sqlite3.connect(tmp_path / "small.db")
    raw.execute("INSERT INTO forecast_scores (exchange, symbol, interval, issued_at, model_id, step, target_time, "
                "actual, error, persistence_error, scored_at) SELECT exchange, symbol, interval, issued_at, 'gone', "
                "step, target_time, '1', 0, 0, created_at FROM forecasts")
    raw.commit()
    raw.close()
    target = str(tmp_path / "new.db")
    res = barcast(capsys, "--db", src, "db", "copy", "--to", target)
    assert res.code == 1 and "copying table forecast_scores" in res.err and "nothing was kept" in res.err, res.err
    database = open_database(target, create=False)
    assert set(table_counts(database).values()) == {0}
    database.close()
    database = open_database(src, create=False)
    with database.begin() as conn:
        conn.execute(forecast_scores.delete().where(forecast_scores.c.model_id == "gone"))
    database.close()
    doc = _copy(capsys, src, target)
    assert {t["table"]: t["target"] for t in doc["tables"]}["forecasts"] == 16


def test_refuses_a_champion_without_its_artifact(source: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    database = open_database(source, create=False)
    champion = registry.champion(database, BTC)
    database.close()
    assert champion is not None and champion.artifact_path
    shutil.rmtree(champion.artifact_path)
    res = barcast(capsys, "--db", source, "db", "copy", "--to", str(tmp_path / "new.db"))
    assert res.code == 1 and f"models in use have no artifact to copy: {champion.id}" in res.err, res.err
    assert not (tmp_path / "new.db").exists()
