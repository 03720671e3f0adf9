"""`barcast db restore`: a backup put back as the SQLite database. The rows are the backup's; the
database it replaces is kept whole (its -wal's commits folded in) and opens; a stale -wal never
reaches the restored file; every refusal exits 2 naming the fault and changes nothing; an older
schema is restored with the upgrade it needs; the backup's model files are what a restored
champion loads, even over a different local copy of them."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from db import artifacts, cluster, migrate, registry
from db.bars import read_bars, upsert_bars
from db.cluster import Instance
from db.csvbars import read_bars_csv
from db.engine import open_database
from db.forecasts import insert_forecasts
from db.stats import table_counts
from tests.conftest import REPO
from tests.daemon.clirun import CliResult, barcast, har_champion
from tests.daemon.opsdata import BTC, PERSISTENCE, forecasts_for, ops_db_url

CSV = "btcusdt_binance_5m_2020-12_2021-07.csv"


def _source(tmp_path: Path, shared_dir: Path, name: str = "live/barcast.db") -> Path:
    """A database of 300 bars and their persistence forecasts."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    bars = read_bars_csv(shared_dir / "data" / CSV, exchange="binance", symbol="BTC-USDT", interval="5m")[:300]
    database = open_database(f"sqlite:///{path}")
    upsert_bars(database, bars)
    stored = read_bars(database, BTC)
    insert_forecasts(database, [forecasts_for(stored, i, PERSISTENCE, stored[i].open_time) for i in range(100, 300)])
    database.close()
    return path


def _counts(path: Path) -> dict[str, int]:
    database = open_database(f"sqlite:///{path}", create=False)
    try:
        counts = table_counts(database)
        return {"bars": counts["bars"], "forecasts": counts["forecasts"]}
    finally:
        database.close()


def _backup(capsys: pytest.CaptureFixture[str], db: Path, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    res = barcast(capsys, "--db", str(db), "db", "backup", "--to", str(to))
    assert res.code == 0, res.err


def _restore(capsys: pytest.CaptureFixture[str], db: Path | str, source: Path, *more: str) -> CliResult:
    return barcast(capsys, "--db", str(db), "db", "restore", "--from", str(source), *more)


def _restored(capsys: pytest.CaptureFixture[str], db: Path | str, source: Path, *more: str) -> dict[str, Any]:
    res = _restore(capsys, db, source, "--format", "json", *more)
    assert res.code == 0, res.err
    return dict(json.loads(res.out))


def _write_and_die(path: Path, shared_dir: Path, first: int, last: int) -> None:
    """Another process stores bars [first, last) of the CSV and dies without closing the
    database: those commits are only in its -wal (nothing checkpointed them)."""
    code = (f"import os\nfrom db.engine import open_database\nfrom db.bars import upsert_bars\n"
            f"from db.csvbars import read_bars_csv\nfrom pathlib import Path\n"
            f"bars = read_bars_csv(Path({str(shared_dir / 'data' / CSV)!r}), exchange='binance', symbol='BTC-USDT', "
            f"interval='5m')[{first}:{last}]\n"
            f"upsert_bars(open_database('sqlite:///{path}', create=False), bars)\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert Path(f"{path}-wal").stat().st_size > 0


def _wal_rows(path: Path) -> int:
    """Bars as SQLite sees the file with its -wal, read without barcast (no checkpoint on close
    changes what the next reader sees: a read-only connection)."""
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(raw.execute("SELECT count(*) FROM bars").fetchone()[0])
    finally:
        raw.close()


def test_restore_puts_the_backup_back_and_keeps_the_replaced_database_with_its_wal(
        tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _source(tmp_path, shared_dir)
    bk = tmp_path / "backups" / "b.db"
    _backup(capsys, db, bk)
    backup_bytes = bk.read_bytes()
    _write_and_die(db, shared_dir, 300, 400)  # 100 more bars, committed, only in barcast.db-wal
    assert _wal_rows(db) == 400

    started = datetime.now(UTC).replace(microsecond=0)
    doc = _restored(capsys, db, bk, "--force", "--artifacts-dir", str(tmp_path / "models"))
    assert _counts(db) == {"bars": 300, "forecasts": 3200}
    kept = Path(doc["previous"])
    assert kept.parent == db.parent and kept.name.startswith("barcast.db.before-restore-")
    when = datetime.strptime(kept.name.rsplit("-", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert started <= when <= datetime.now(UTC)
    assert doc == {
        "backup": str(bk), "database": f"sqlite:///{db}", "bytes": len(backup_bytes),
        "pages": len(backup_bytes) // doc["page_size"], "page_size": doc["page_size"],
        "schema_version": migrate.head_revision(), "latest_schema_version": migrate.head_revision(),
        "upgrade_needed": False, "integrity_check": "ok", "previous": str(kept), "previous_side_files": [],
        "removed": [], "seconds": doc["seconds"],
        "artifacts": {"directory": str(tmp_path / "models"), "models": [], "set_aside": {}, "unavailable": {}},
    }
    # the replaced database is whole on its own: the -wal's 100 bars folded into the kept file
    assert sorted(p.name for p in db.parent.iterdir()) == ["barcast.db", kept.name]
    assert _counts(kept) == {"bars": 400, "forecasts": 3200}
    raw = sqlite3.connect(kept)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()
    assert bk.read_bytes() == backup_bytes  # the backup itself is never opened as a database
    assert (db.stat().st_mode & 0o777) == 0o600

    # and it undoes: the kept file restores like a backup
    doc = _restored(capsys, db, kept, "--force", "--artifacts-dir", str(tmp_path / "models"))
    assert _counts(db) == {"bars": 400, "forecasts": 3200}
    assert _counts(Path(doc["previous"])) == {"bars": 300, "forecasts": 3200}

    res = _restore(capsys, db, bk, "--force", "--artifacts-dir", str(tmp_path / "models"))
    assert res.code == 0, res.err
    assert f"restored {bk} into {db}" in res.out and "schema version " + migrate.head_revision() in res.out
    assert "PRAGMA integrity_check ok" in res.out and "previous database kept as " in res.out, res.out


def test_a_stale_wal_beside_the_database_does_not_reach_the_restored_file(
        tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The database file was deleted but not its -wal: SQLite would replay those frames into
    whatever file gets the name next (the backup's own pages, so they apply cleanly)."""
    db = _source(tmp_path, shared_dir)
    bk = tmp_path / "backups" / "b.db"
    _backup(capsys, db, bk)
    _write_and_die(db, shared_dir, 300, 400)
    db.unlink()
    plain = tmp_path / "plain-copy.db"  # what `cp` of the backup would give: the stale -wal replayed
    shutil.copyfile(bk, plain)
    shutil.copyfile(f"{db}-wal", f"{plain}-wal")
    assert _wal_rows(plain) == 400

    doc = _restored(capsys, db, bk, "--artifacts-dir", str(tmp_path / "models"))  # no database: no --force
    assert doc["previous"] is None and doc["removed"] == [f"{db}-wal", f"{db}-shm"]
    assert _wal_rows(db) == 300 and _counts(db) == {"bars": 300, "forecasts": 3200}
    assert sorted(p.name for p in db.parent.iterdir()) == ["barcast.db"]


def test_refusals_exit_2_naming_the_fault_and_change_nothing(
        tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _source(tmp_path, shared_dir)
    bk = tmp_path / "backups" / "b.db"
    _backup(capsys, db, bk)
    _write_and_die(db, shared_dir, 300, 310)
    files = {p.name: p.read_bytes() for p in db.parent.iterdir()}

    def refused(source: Path, *more: str, target: Path | str = db) -> str:
        res = _restore(capsys, target, source, "--force", *more)
        assert res.code == 2, (source, res.out, res.err)
        assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == files  # no temp, nothing kept
        return res.err

    assert f"--from {tmp_path / 'nope.db'} does not exist" in refused(tmp_path / "nope.db")
    assert "is a directory; name the backup file" in refused(tmp_path / "backups")
    for same in (db, db.parent / "." / "barcast.db", Path(f"{db}-wal")):
        assert "is the database being restored" in refused(same), same
    os.link(db, tmp_path / "hard-link.db")
    assert "is the database being restored" in refused(tmp_path / "hard-link.db")

    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    assert f"--from {text} is not a SQLite database; name a file `barcast db backup` wrote" in refused(text)
    dump = tmp_path / "pg.dump"
    dump.write_bytes(b"PGDMP\x01\x0e\x00" + b"\0" * 100)
    assert "is not a SQLite database (a pg_dump archive: restore it into PostgreSQL with pg_restore)" in refused(dump)
    empty = tmp_path / "empty.db"
    empty.touch()
    assert "is not a SQLite database" in refused(empty)

    foreign = tmp_path / "foreign.db"
    raw = sqlite3.connect(foreign)
    raw.execute("CREATE TABLE notes (body TEXT)")
    raw.commit()
    raw.close()
    assert "is a SQLite database but not a barcast one (no schema version)" in refused(foreign)

    newer = tmp_path / "newer.db"
    shutil.copyfile(bk, newer)
    raw = sqlite3.connect(newer)
    raw.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    raw.commit()
    raw.close()
    err = refused(newer)
    assert (f"--from {newer} has schema version 9999_from_the_future, newer than this barcast knows (up to "
            f"{migrate.head_revision()})") in err, err

    damaged = tmp_path / "damaged.db"
    shutil.copyfile(bk, damaged)
    raw = sqlite3.connect(damaged)
    page = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_forecasts_issued_at'").fetchone()[0]
    size = raw.execute("PRAGMA page_size").fetchone()[0]
    raw.close()
    with damaged.open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\0" * size)
    assert f"--from {damaged} fails PRAGMA integrity_check (" in refused(damaged)
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(bk.read_bytes()[: bk.stat().st_size // 2])
    assert "--from " + str(truncated) in refused(truncated)

    for side in ("-wal", "-journal"):
        Path(f"{bk}{side}").write_bytes(b"x")
        assert f"--from {bk}: {bk}{side} exists beside it" in refused(bk)
        Path(f"{bk}{side}").unlink()

    res = _restore(capsys, db, bk)
    assert res.code == 2 and f"the database {db} exists; pass --force to replace it" in res.err, res.err
    err = refused(bk, target=tmp_path / "no-such-dir" / "barcast.db")
    assert f"directory {tmp_path / 'no-such-dir'} of the database" in err and not (tmp_path / "no-such-dir").exists()

    # a daemon's heartbeat on the database (as `db copy` refuses it), read from its -wal
    database = open_database(f"sqlite:///{db}", create=False)
    now = datetime.now(UTC)
    cluster.heartbeat(database, Instance("daemon-a", "host-a", 4242, now, now, now), timedelta(minutes=5))
    database.close()
    files = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    err = refused(bk)
    assert f"a daemon is running on sqlite:///{db}: daemon-a (host host-a, pid 4242" in err, err
    assert "stop it first (`systemctl stop barcast`)" in err
    database = open_database(f"sqlite:///{db}", create=False)
    cluster.leave(database, "daemon-a")
    database.close()

    # a process that has the database open (no heartbeat: a sqlite3 shell, an older barcast)
    holder = sqlite3.connect(db)
    holder.execute("SELECT count(*) FROM bars").fetchone()
    files = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    try:
        err = refused(bk)
    finally:
        holder.close()
    assert f"another process has the database {db} open" in err and "nothing was changed" in err, err
    assert _counts(db)["bars"] == 310


def test_postgresql_is_pointed_at_pg_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No connection is made, the file is not read: the command line, password left out."""
    url = "postgresql://barcast:s3cret@db-host:5433/barcast?connect_timeout=5"
    res = barcast(capsys, "--db", url, "db", "restore", "--from", str(tmp_path / "b.dump"))
    assert res.code == 2, res.err
    assert ("pg_restore --clean --if-exists --no-owner --single-transaction "
            f"--dbname='postgresql://barcast@db-host:5433/barcast?connect_timeout=5' {tmp_path / 'b.dump'} "
            "(the password from PGPASSWORD or ~/.pgpass)") in res.err, res.err
    assert "s3cret" not in res.err and res.err.count("\n") == 1


def test_an_older_schema_is_restored_with_the_upgrade_it_needs(
        tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alembic.command import upgrade as alembic_upgrade

    from db.engine import create_db_engine

    old = tmp_path / "old.db"
    engine = create_db_engine(f"sqlite:///{old}")
    with engine.begin() as conn:
        alembic_upgrade(migrate._alembic_config(conn), "0006")
        conn.exec_driver_sql("INSERT INTO bars (exchange, symbol, interval, open_time, open, high, low, close, "
                             "volume, source, updated_at) VALUES ('binance', 'BTC-USDT', '5m', "
                             "'2021-01-01 00:00:00.000000', '1', '2', '0.5', '1.5', '10', 'live', "
                             "'2021-01-01 00:05:00.000000')")
    engine.dispose()
    bk = tmp_path / "backups" / "old.db"
    _backup(capsys, old, bk)
    db = _source(tmp_path, shared_dir)

    res = _restore(capsys, db, bk, "--force", "--artifacts-dir", str(tmp_path / "models"))
    assert res.code == 0, res.err
    assert (f"schema version 0006 is older than this barcast's {migrate.head_revision()}: `barcast run` and every "
            "command refuse it until you run `barcast db upgrade`") in res.out, res.out
    assert "model artifacts: none inside (schema 0006 predates stored model files)" in res.out
    res = barcast(capsys, "--db", str(db), "bars", "--series", "binance:BTC-USDT")
    assert res.code == 1 and "older than this barcast's" in res.err, res.err  # as the daemon refuses it
    assert barcast(capsys, "--db", str(db), "db", "upgrade").code == 0
    res = barcast(capsys, "--db", str(db), "bars", "--series", "binance:BTC-USDT", "--format", "csv")
    assert res.code == 0 and res.out.count("\n") == 2, res.out

    doc = _restored(capsys, db, bk, "--force", "--artifacts-dir", str(tmp_path / "models"))
    assert doc["schema_version"] == "0006" and doc["upgrade_needed"] is True and doc["artifacts"] is None


def test_root_gives_the_file_to_the_directory_owner(
        tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The service's user owns its StateDirectory; a restore run as root must not leave it a
    root-owned database it cannot write."""
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    db = _source(tmp_path, shared_dir)
    bk = tmp_path / "backups" / "b.db"
    _backup(capsys, db, bk)
    os.chown(db.parent, 4242, 4343)
    doc = _restored(capsys, db, bk, "--force", "--artifacts-dir", str(tmp_path / "models"))
    st = db.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4343, 0o600)
    assert Path(doc["previous"]).stat().st_uid == 0  # the kept file is the old one, as it was


@pytest.fixture
def installation(tmp_path: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                 capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """A SQLite install whose BTC champion is a `har` model in its own models directory."""
    url = ops_db_url(tmp_path, shared_dir, tmp_path_factory.getbasetemp())
    har = har_champion(capsys, url, tmp_path / "models")
    return tmp_path / "ops.db", har


def _serving(config_file: Path) -> str:
    """The model the daemon's installer loads for BTC (a real load and test prediction)."""
    from daemon.config import load_config
    from daemon.live.inference import ModelInstaller

    config = load_config(config_file, env={})
    database = open_database(config.database_url, create=False)
    try:
        return ModelInstaller(config, database, None, None).load_serving(str(BTC)).model_id  # type: ignore[arg-type]
    finally:
        database.close()


def test_the_restored_champion_loads_the_backups_files_over_a_different_local_copy(
        installation: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, har = installation
    models = tmp_path / "models"
    bk = tmp_path / "backups" / "b.db"
    _backup(capsys, db, bk)
    config_file = tmp_path / "barcast.toml"
    config_file.write_text(f'[[series]]\nexchange = "binance"\nsymbol = "BTC-USDT"\ninterval = "5m"\n\n'
                           f'[database]\nurl = "sqlite:///{db}"\n\n'
                           f'[paths]\ndata_dir = "{tmp_path}"\nartifacts_dir = "{models}"\n')

    # the same machine: the model's directory holds exactly the backup's files and stays
    doc = _restored(capsys, db, bk, "--force", "--artifacts-dir", str(models))
    assert doc["artifacts"] == {"directory": str(models), "models": [har], "set_aside": {}, "unavailable": {}}
    assert _serving(config_file) == har
    stored = _stored_files(db, har)

    # a directory of that id with other files (damaged, or another database's model of the same id)
    model_file = next(p for p in sorted((models / har).iterdir()) if p.name != "manifest.json")
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    res = _restore(capsys, db, bk, "--force", "--artifacts-dir", str(models))
    assert res.code == 0, res.err
    aside = next(p for p in models.iterdir() if p.name.startswith(f"{har}.before-restore-"))
    assert (f"model {har}: {models / har} held other files than the backup's; moved to {aside} (the backup's are "
            "loaded instead)") in res.out, res.out
    assert (aside / model_file.name).read_bytes() == stored[model_file.name] + b"\0"  # kept, not deleted
    assert not (models / har).exists()
    assert _serving(config_file) == har  # loads: the backup's files, materialised on first use
    assert {p.name: p.read_bytes() for p in (models / har).iterdir()} == stored
    res = barcast(capsys, "--config", str(config_file), "models", "promote", har)  # loads it as the daemon would
    assert res.code == 0, res.err


def _stored_files(db: Path, model_id: str) -> dict[str, bytes]:
    database = open_database(f"sqlite:///{db}", create=False)
    try:
        assert registry.get_model(database, model_id).artifact_path == f"db:{model_id}"  # type: ignore[union-attr]
        return artifacts.get(database, model_id)
    finally:
        database.close()
