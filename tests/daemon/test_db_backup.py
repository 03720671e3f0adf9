"""`barcast db backup`: a consistent copy of a SQLite database taken while another process keeps
writing bars and forecasts, which opens and answers as the source did at one moment; its refusals
(an existing target, the source itself, a missing directory, PostgreSQL); a backup that fails
leaves nothing under the target's name; a restored backup serves its champion on a machine that
never had the model's directory."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from db import backup, migrate, registry
from db.bars import read_bars, upsert_bars
from db.csvbars import read_bars_csv
from db.engine import open_database
from db.forecasts import insert_forecasts
from db.stats import table_counts
from tests.conftest import REPO
from tests.daemon.clirun import barcast, har_champion
from tests.daemon.opsdata import BTC, PERSISTENCE, forecasts_for, ops_db_url

#: Forecasts whose issuing bar is not stored: none in a consistent copy (the writer stores the bar first).
ORPHANS = ("SELECT count(*) FROM forecasts f WHERE NOT EXISTS (SELECT 1 FROM bars b WHERE b.exchange = f.exchange "
           "AND b.symbol = f.symbol AND b.interval = f.interval AND b.open_time = f.issued_at)")


def _counts(url: str) -> dict[str, int]:
    database = open_database(url, create=False)
    try:
        counts = table_counts(database)
        return {"bars": counts["bars"], "forecasts": counts["forecasts"]}
    finally:
        database.close()


@contextmanager
def _writer(url: str, tmp_path: Path) -> Iterator[None]:
    """The writer process (tests/daemon/backupwriter.py) until the block ends."""
    stop = tmp_path / "stop-writer"
    proc = subprocess.Popen([sys.executable, "-m", "tests.daemon.backupwriter", url, str(stop)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        yield
    finally:
        stop.touch()
        assert proc.wait(timeout=120) == 0


def _wait_for_rows(url: str, more_than: int) -> int:
    """Block until the writer has stored more than `more_than` bars (no clock: it writes until it has)."""
    while (n := _counts(url)["bars"]) <= more_than:
        time.sleep(0.05)
    return n


def _backup(capsys: pytest.CaptureFixture[str], src: str, target: Path, *more: str) -> dict[str, Any]:
    res = barcast(capsys, "--db", src, "db", "backup", "--to", str(target), "--format", "json", *more)
    assert res.code == 0, res.err
    return dict(json.loads(res.out))


def test_a_backup_taken_while_a_process_writes_is_one_consistent_moment(
        tmp_path: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    src = ops_db_url(tmp_path, shared_dir, tmp_path_factory.getbasetemp())
    target = tmp_path / "backups" / "barcast.db"
    target.parent.mkdir()
    # small steps, and after the first one the writer commits more bars and forecasts before the
    # copy goes on: other processes' commits land between the steps of one backup
    monkeypatch.setattr(backup, "PAGES_PER_STEP", 64)
    steps = []
    first_step: list[int] = []
    real_copy = backup.copy_pages

    def copy_while_writing(url: str, temp: Path, on_pages: backup.OnPages | None = None) -> backup.Copied:
        def step(done: int, total: int) -> None:
            steps.append((done, total))
            if len(steps) == 1:  # the snapshot was fixed before this first step
                first_step.append(_counts(src)["bars"])
                _wait_for_rows(src, first_step[0] + 10)
            if on_pages is not None:
                on_pages(done, total)
        return real_copy(url, temp, step)

    monkeypatch.setattr(backup, "copy_pages", copy_while_writing)
    with _writer(src, tmp_path):
        _wait_for_rows(src, _counts(src)["bars"] + 3)
        before = _counts(src)
        doc = _backup(capsys, src, target)
        after = _wait_for_rows(src, _counts(src)["bars"] + 3)
    assert len(steps) > 10 and [d for d, _ in steps] == sorted(d for d, _ in steps)  # never restarted
    assert steps[-1][0] == steps[-1][1] == doc["pages"]
    assert doc["integrity_check"] == "ok" and doc["schema_version"] == migrate.head_revision()
    assert doc["bytes"] == target.stat().st_size and doc["pages"] * doc["page_size"] == doc["bytes"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["barcast.db"]  # one file: no temp, no -wal
    with target.open("rb") as fh:
        assert fh.read(20)[18] == 1  # a rollback-journal file, self-contained
    raw = sqlite3.connect(target)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert raw.execute(ORPHANS).fetchone() == (0,)
    raw.close()

    url = f"sqlite:///{target}"
    got = _counts(url)
    # the snapshot of the first step: what was there before, not what came during the copy
    assert before["bars"] <= got["bars"] <= first_step[0] < first_step[0] + 10 < after
    assert before["forecasts"] <= got["forecasts"] < _counts(src)["forecasts"]
    copy_db, src_db = open_database(url, create=False), open_database(src, create=False)
    try:
        newest = read_bars(copy_db, BTC, limit=1, newest_first=True)[0].open_time
        assert read_bars(copy_db, BTC) == read_bars(src_db, BTC, until=newest + BTC.step)
        with copy_db.engine.connect() as conn:
            issued = conn.execute(text("SELECT max(issued_at) FROM forecasts")).scalar_one()
    finally:
        copy_db.close()
        src_db.close()
    until = (newest + BTC.step).strftime("%Y-%m-%dT%H:%M:%S")
    for argv in (("bars", "--series", "binance:BTC-USDT", "--since", "2021-07-10", "--until", until,
                  "--format", "csv"),):
        ours, theirs = barcast(capsys, "--db", url, *argv), barcast(capsys, "--db", src, *argv)
        assert ours.code == theirs.code == 0 and ours.out == theirs.out and ours.out.count("\n") > 100
    res = barcast(capsys, "--db", url, "forecasts", "--series", "binance:BTC-USDT", "--latest", "--format", "json")
    assert res.code == 0, res.err
    latest = json.loads(res.out)
    # the newest bar, or the one before when the snapshot fell between a bar's commit and its forecast's
    assert latest and {f["issued_at"] for f in latest} == {issued.replace(" ", "T")[:19] + "Z"}
    assert issued[:19].replace(" ", "T") in (newest.strftime("%Y-%m-%dT%H:%M:%S"),
                                             (newest - BTC.step).strftime("%Y-%m-%dT%H:%M:%S"))


def _small_source(tmp_path: Path, shared_dir: Path) -> str:
    url = f"sqlite:///{tmp_path / 'small.db'}"
    bars = read_bars_csv(shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv", exchange="binance",
                         symbol="BTC-USDT", interval="5m")[:300]
    database = open_database(url)
    upsert_bars(database, bars)
    stored = read_bars(database, BTC)
    insert_forecasts(database, [forecasts_for(stored, i, PERSISTENCE, stored[i].open_time) for i in range(100, 300)])
    database.close()
    return url


def test_refusals_leave_every_file_as_it_was(tmp_path: Path, shared_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    src = _small_source(tmp_path, shared_dir)
    db_file = tmp_path / "small.db"
    original = db_file.read_bytes()

    def refused(*argv: str, code: int = 2) -> str:
        res = barcast(capsys, "--db", src, "db", "backup", *argv)
        assert res.code == code, (argv, res.err)
        return res.err

    for same in (db_file, tmp_path / "." / "small.db", Path(f"{db_file}-wal")):
        err = refused("--to", str(same), "--force")
        assert "is the database being backed up" in err, err
    os.link(db_file, tmp_path / "hard-link.db")
    assert "is the database being backed up" in refused("--to", str(tmp_path / "hard-link.db"), "--force")
    err = refused("--to", str(tmp_path / "no-such-dir" / "b.db"))
    assert f"directory {tmp_path / 'no-such-dir'} does not exist; create it first" in err, err
    assert not (tmp_path / "no-such-dir").exists()
    assert "is a directory; name the backup file" in refused("--to", str(tmp_path))

    existing = tmp_path / "old-backup.db"
    existing.write_text("yesterday's backup")
    err = refused("--to", str(existing))
    assert "exists; pass --force to replace it" in err, err
    assert existing.read_text() == "yesterday's backup"
    Path(f"{existing}-wal").write_text("a WAL of something else")
    err = refused("--to", str(existing), "--force")
    assert f"{existing}-wal exists beside it" in err, err
    Path(f"{existing}-wal").unlink()
    doc = _backup(capsys, src, existing, "--force")
    assert doc["integrity_check"] == "ok"
    assert _counts(f"sqlite:///{existing}") == _counts(src) == {"bars": 300, "forecasts": 3200}

    res = barcast(capsys, "--db", str(tmp_path / "typo.db"), "db", "backup", "--to", str(tmp_path / "x.db"))
    assert res.code == 2 and "typo.db does not exist" in res.err, res.err
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "x.db").exists()
    assert db_file.read_bytes() == original


def test_postgresql_is_pointed_at_pg_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No connection is made: the command line for the configured database, password left out."""
    url = "postgresql://barcast:s3cret@db-host:5433/barcast?connect_timeout=5"
    res = barcast(capsys, "--db", url, "db", "backup", "--to", str(tmp_path / "b.dump"))
    assert res.code == 2, res.err
    assert (f"pg_dump --format=custom --file={tmp_path / 'b.dump'} "
            "'postgresql://barcast@db-host:5433/barcast?connect_timeout=5' (the password from PGPASSWORD or "
            "~/.pgpass)") in res.err, res.err
    assert "s3cret" not in res.err and res.err.count("\n") == 1
    assert not (tmp_path / "b.dump").exists()


def test_a_failed_backup_leaves_no_file(tmp_path: Path, shared_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged source (an index page zeroed on disk) copies page for page, fails the check and
    leaves nothing: neither the target nor the temporary file."""
    src = _small_source(tmp_path, shared_dir)
    raw = sqlite3.connect(tmp_path / "small.db")
    page = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_forecasts_issued_at'").fetchone()[0]
    size = raw.execute("PRAGMA page_size").fetchone()[0]
    raw.close()
    with (tmp_path / "small.db").open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\0" * size)
    out = tmp_path / "backups"
    out.mkdir()
    res = barcast(capsys, "--db", src, "db", "backup", "--to", str(out / "b.db"))
    assert res.code == 1 and "fails PRAGMA integrity_check" in res.err, res.err
    assert list(out.iterdir()) == []


def test_an_older_schema_backs_up_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The backup before `barcast db upgrade`, which the refusal of an old schema asks for."""
    from alembic.command import upgrade as alembic_upgrade

    from db.engine import create_db_engine

    for rev, artifacts in (("0009", True), ("0006", False)):
        url = f"sqlite:///{tmp_path / f'old-{rev}.db'}"
        engine = create_db_engine(url)
        with engine.begin() as conn:
            alembic_upgrade(migrate._alembic_config(conn), rev)
        engine.dispose()
        res = barcast(capsys, "--db", url, "bars", "--series", "binance:BTC-USDT")
        assert res.code == 1 and "back it up first: `barcast db backup --to PATH`" in res.err, res.err
        doc = _backup(capsys, url, tmp_path / f"backup-{rev}.db")
        assert doc["schema_version"] == rev and (doc["artifacts"] is not None) == artifacts
        raw = sqlite3.connect(tmp_path / f"backup-{rev}.db")
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(rev,)]
        raw.close()
    res = barcast(capsys, "--db", url, "db", "backup", "--to", str(tmp_path / "b.db"))
    assert res.code == 0 and "model artifacts: not included (schema 0006 predates" in res.out, res.out


@pytest.fixture
def installation(tmp_path: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                 capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """A SQLite install whose BTC champion is a `har` model in its own models directory."""
    url = ops_db_url(tmp_path, shared_dir, tmp_path_factory.getbasetemp())
    har = har_champion(capsys, url, tmp_path / "models")
    return url, har


def test_a_restored_backup_serves_its_champion_without_the_models_directory(
        installation: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.config import load_config
    from daemon.live.inference import ModelInstaller

    url, har = installation
    doc = _backup(capsys, url, tmp_path / "backup.db")
    assert doc["artifacts"]["models"] == [har] and doc["artifacts"]["missing"] == {}
    assert doc["artifacts"]["files"] >= 2 and doc["artifacts"]["bytes"] > 0
    source = open_database(url, create=False)
    original = registry.get_model(source, har).artifact_path
    source.close()
    assert original == str((tmp_path / "models" / har).resolve())  # the live database keeps its directory

    # the machine is lost: database and models directory; the backup is restored on a new one
    shutil.rmtree(tmp_path / "models")
    new = tmp_path / "new-machine"
    new.mkdir()
    shutil.copyfile(tmp_path / "backup.db", new / "barcast.db")
    config_file = new / "barcast.toml"
    config_file.write_text(f'[[series]]\nexchange = "binance"\nsymbol = "BTC-USDT"\ninterval = "5m"\n\n'
                           f'[database]\nurl = "sqlite:///{new / "barcast.db"}"\n\n'
                           f'[paths]\ndata_dir = "{new}"\nartifacts_dir = "{new / "models"}"\n')
    config = load_config(config_file, env={})
    restored = open_database(config.database_url, create=False)
    try:
        champion = registry.champion(restored, BTC)
        assert champion is not None and champion.id == har and champion.artifact_path == f"db:{har}"
        serving = ModelInstaller(config, restored, None, None).load_serving(str(BTC))  # type: ignore[arg-type]
        assert serving.model_id == har
        assert (new / "models" / har / "manifest.json").is_file()  # materialised where this install keeps models
    finally:
        restored.close()
    res = barcast(capsys, "--config", str(config_file), "models", "promote", har)  # loads it as the daemon would
    assert res.code == 0, res.err
    # and the restored database backs up again as it is (its artifact already inside)
    doc = _backup(capsys, config.database_url, tmp_path / "again.db")
    assert doc["artifacts"]["models"] == [] and doc["artifacts"]["missing"] == {}
