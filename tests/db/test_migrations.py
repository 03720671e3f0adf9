"""Schema versions: empty -> head, older -> head in place, newer refused; schema.py == migrations."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.command import upgrade as alembic_upgrade
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from db import migrate
from db.bars import read_bars
from db.engine import create_db_engine, open_database
from db.errors import DatabaseError, SchemaVersionError
from db.records import SeriesKey
from db.schema import metadata
from tests.unprivileged import as_user


def test_empty_database_gets_head_and_matches_schema(any_db_url: str) -> None:
    database = open_database(any_db_url)
    with database.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    database.close()
    assert diffs == [], f"db/schema.py and the migrations disagree: {diffs}"


def _make_old_database(url: str) -> None:
    """A database at the first schema version with a bar in it, as an old barcast left it."""
    engine = create_db_engine(url)
    with engine.begin() as conn:
        alembic_upgrade(migrate._alembic_config(conn), "0001")
        pg = conn.dialect.name == "postgresql"
        conn.execute(
            text(
                "INSERT INTO bars (exchange, symbol, interval, open_time, open, high, low, close, volume, "
                "source, updated_at) VALUES ('binance', 'BTC-USDT', '5m', :t, :p, :p, :p, :p, :v, 'import', :t)"
            ),
            {"t": datetime(2021, 1, 1, tzinfo=UTC) if pg else "2021-01-01 00:00:00.000000",
             "p": D("29000.10") if pg else "29000.10",
             "v": D("1.5") if pg else "1.5"},
        )
    engine.dispose()


def test_older_database_is_refused_then_upgraded_in_place(any_db_url: str) -> None:
    _make_old_database(any_db_url)
    with pytest.raises(SchemaVersionError, match="barcast db upgrade"):
        open_database(any_db_url)
    database = open_database(any_db_url, upgrade=True)
    bars = read_bars(database, SeriesKey("binance", "BTC-USDT"))
    assert len(bars) == 1 and str(bars[0].close) == "29000.10"
    with database.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
    database.close()


def test_newer_database_is_refused(any_db_url: str) -> None:
    open_database(any_db_url).close()
    engine = create_db_engine(any_db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="newer than this barcast"):
        open_database(any_db_url)
    with pytest.raises(SchemaVersionError, match="newer than this barcast"):
        open_database(any_db_url, upgrade=True)


def test_cli_db_upgrade_on_old_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _make_old_database(url)
    engine = create_db_engine(url)
    with engine.connect() as conn:
        old = migrate.current_revision(conn)
    engine.dispose()
    out = subprocess.run([sys.executable, "-m", "daemon", "--db", url, "db", "upgrade"],
                         capture_output=True, text=True, check=True)
    head = migrate.head_revision()
    assert f"schema version {head} (upgraded from {old}; latest {head})" in out.stdout, out.stdout
    again = subprocess.run([sys.executable, "-m", "daemon", "--db", url, "db", "upgrade"],
                           capture_output=True, text=True, check=True)
    assert f"schema version {head} (already at the latest; latest {head})" in again.stdout, again.stdout
    fresh = f"sqlite:///{tmp_path / 'new.db'}"
    made = subprocess.run([sys.executable, "-m", "daemon", "--db", fresh, "db", "upgrade"],
                          capture_output=True, text=True, check=True)
    assert f"schema version {head} (created; latest {head})" in made.stdout, made.stdout


def test_non_database_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"this is not a database, it is my notes\n" * 10
    path.write_bytes(content)
    with pytest.raises(DatabaseError, match="not a SQLite database"):
        open_database(f"sqlite:///{path}")
    assert path.read_bytes() == content
    assert not (tmp_path / "notes.db-wal").exists()


def test_read_only_directory_is_reported_at_start() -> None:
    base = Path(tempfile.mkdtemp(prefix="barcast-ro-", dir="/tmp"))
    base.chmod(0o755)
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    def check() -> str:
        open_database(f"sqlite:///{ro}/barcast.db")
        return "opened"

    msg = as_user(check)
    try:
        assert msg.startswith("error:") and "not writable" in msg and str(ro) in msg, msg
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(base)


def _stamps(pg: bool, t0: datetime) -> Callable[[int], object]:
    """`t(minutes)`: t0 + minutes as raw SQL takes it on the engine (SQLite stores text)."""

    def t(minutes: int) -> object:
        v = t0 + timedelta(minutes=minutes)
        return v if pg else v.strftime("%Y-%m-%d %H:%M:%S.%f")

    return t


def test_point_only_forecasts_survive_the_quantile_migration(any_db_url: str) -> None:
    """A database at 0003 holding point forecasts and their scores upgrades to head without loss;
    the old rows read back with null quantiles beside new quantile forecasts."""
    from db.forecasts import insert_forecasts, query_forecasts
    from db.records import Forecast
    from db.scores import accuracy

    engine = create_db_engine(any_db_url)
    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        alembic_upgrade(migrate._alembic_config(conn), "0003")
        pg = conn.dialect.name == "postgresql"
        t = _stamps(pg, t0)

        for step in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO forecasts (exchange, symbol, interval, issued_at, model_id, step, target_time, "
                    "predicted, last_close, latency_ms, created_at) VALUES "
                    "('binance', 'BTC-USDT', '5m', :i, 'old-model', :s, :tt, :p, :lc, 2.5, :i)"
                ),
                {"i": t(0), "s": step, "tt": t(5 * step), "p": 29000.5 + step,
                 "lc": D("29000.10") if pg else "29000.10"},
            )
        conn.execute(
            text(
                "INSERT INTO forecast_scores (exchange, symbol, interval, issued_at, model_id, step, target_time, "
                "actual, error, persistence_error, scored_at) VALUES "
                "('binance', 'BTC-USDT', '5m', :i, 'old-model', 1, :tt, :a, 1.5, 0.1, :tt)"
            ),
            {"i": t(0), "tt": t(5), "a": D("29000.00") if pg else "29000.00"},
        )
    engine.dispose()
    database = open_database(any_db_url, upgrade=True)
    key = SeriesKey("binance", "BTC-USDT")
    new = Forecast(key, t0 + timedelta(minutes=5), "new-model", (t0 + timedelta(minutes=10),), (29001.0,),
                   last_close=D("29000.5"), levels=(0.1, 0.5, 0.9), quantiles=((28990.0, 29001.0, 29012.5),))
    assert insert_forecasts(database, [new]) == 1
    old, = query_forecasts(database, key, model_id="old-model")
    assert old.closes == (29001.5, 29002.5) and str(old.last_close) == "29000.10" and old.latency_ms == 2.5
    assert old.levels is None and old.quantiles is None
    back, = query_forecasts(database, key, model_id="new-model")
    assert back.levels == (0.1, 0.5, 0.9) and back.quantiles == ((28990.0, 29001.0, 29012.5),)
    acc, = accuracy(database, series=key)
    assert (acc.model_id, acc.n, acc.mae, acc.persistence_mae) == ("old-model", 1, 1.5, 0.1)
    assert acc.n_quantile == 0 and acc.pinball_mean is None and acc.coverage is None and acc.pinball is None
    with database.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
    database.close()


def test_duplicate_open_champion_terms_are_repaired_then_refused(any_db_url: str) -> None:
    """A database at 0008 with the promotion race's leftovers (two open terms of one series) keeps
    the newest as champion, ends the other when it began, retires its model; a third open term
    is then refused by the database itself."""
    from sqlalchemy.exc import IntegrityError

    from db import registry

    engine = create_db_engine(any_db_url)
    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        alembic_upgrade(migrate._alembic_config(conn), "0008")
        pg = conn.dialect.name == "postgresql"
        t = _stamps(pg, t0)

        for mid in ("old", "new", "other"):
            conn.execute(
                text("INSERT INTO models (id, arch, series, params, metrics, status, created_at) VALUES "
                     "(:id, 'linear', :s, '{}', '{}', 'champion', :c)"),
                {"id": mid, "s": '["binance:BTC-USDT:5m"]' if mid != "other" else '["binance:ETH-USDT:5m"]',
                 "c": t(0)},
            )
        for mid, sym, start in (("old", "BTC-USDT", 0), ("new", "BTC-USDT", 5), ("other", "ETH-USDT", 1)):
            conn.execute(
                text("INSERT INTO champion_history (exchange, symbol, interval, model_id, started_at, reason) "
                     "VALUES ('binance', :sym, '5m', :m, :s, 'race')"),
                {"sym": sym, "m": mid, "s": t(start)},
            )
    engine.dispose()
    database = open_database(any_db_url, upgrade=True)
    btc, eth = SeriesKey("binance", "BTC-USDT"), SeriesKey("binance", "ETH-USDT")
    assert registry.champions(database, [btc, eth]) == {btc: "new", eth: "other"}
    hist = registry.history(database, btc)
    assert [(h[0], h[2]) for h in hist] == [("old", t0 + timedelta(minutes=5)), ("new", None)]
    assert registry.get_model(database, "old").status == "retired"
    assert registry.get_model(database, "new").status == "champion"
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        conn.execute(text("INSERT INTO champion_history (exchange, symbol, interval, model_id, started_at) "
                          "VALUES ('binance', 'BTC-USDT', '5m', 'old', :s)"), {"s": t0})
    registry.promote(database, "old", btc, reason="back")  # promotions still work under the index
    assert registry.champions(database, [btc]) == {btc: "old"}
    database.close()
