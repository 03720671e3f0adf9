"""Read commands refuse a database that does not exist; commands that store data create it;
an import whose file has another interval than the series is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db.engine import open_database
from tests.daemon.clirun import barcast

READ_COMMANDS = (
    ("db", "stats"),
    ("db", "prune"),
    ("db", "prune", "--dry-run"),
    ("bars", "--series", "binance:BTC-USDT"),
    ("forecasts",),
    ("gaps",),
    ("accuracy",),
    ("status", "--offline"),
    ("models", "list"),
)


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=lambda a: " ".join(a))
def test_read_command_refuses_a_missing_sqlite_file(argv: tuple[str, ...], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.db"
    res = barcast(capsys, "--db", f"sqlite:///{path}", *argv)
    assert res.code == 2, res
    assert f"{path} does not exist" in res.err
    assert not path.exists()


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_bad_input_like_a_missing_file(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt database name on a PostgreSQL server exited 1 (a runtime failure) where a
    missing SQLite file exits 2; the server says so only in its own words (no error code on a
    failed connect), so barcast asks its `postgres` database. An unreachable server stays 1."""
    from sqlalchemy.engine import make_url

    server = make_url(pg_url)
    typo = server.set(database="barcast_no_such_database").render_as_string(hide_password=False)
    for argv in (("db", "stats"), ("bars", "--series", "binance:BTC-USDT")):
        res = barcast(capsys, "--db", typo, *argv)
        assert res.code == 2, res
        assert "barcast_no_such_database does not exist on its server" in res.err and "***" in res.err, res.err
    away = server.set(port=1).render_as_string(hide_password=False)
    res = barcast(capsys, "--db", away, "db", "stats")
    assert res.code == 1 and "cannot open database" in res.err, res


def test_plot_refuses_a_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.db"
    res = barcast(capsys, "--db", str(path), "plot", "--out", str(tmp_path / "x.png"))
    assert res.code == 2 and "does not exist" in res.err
    assert not path.exists()


def test_a_url_typo_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = barcast(capsys, "--db", "notaurl", "db", "stats")
    assert res.code == 2 and "notaurl does not exist" in res.err
    assert os.listdir(tmp_path) == []


def test_commands_that_store_data_create_the_database(shared_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fresh = tmp_path / "new" / "up.db"
    assert barcast(capsys, "--db", str(fresh), "db", "upgrade").code == 0
    assert fresh.exists()
    imported = tmp_path / "imp.db"
    src = shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv"
    small = tmp_path / "small.csv"
    small.write_text("".join(src.read_text().splitlines(keepends=True)[:50]))
    res = barcast(capsys, "--db", str(imported), "import-bars", str(small), "--series", "binance:BTC-USDT:5m")
    assert res.code == 0, res.err
    db = open_database(str(imported), create=False)  # exists now, and a read command opens it
    db.close()
    assert barcast(capsys, "--db", str(imported), "db", "stats").code == 0


def test_import_of_a_5m_file_as_1m_is_refused_naming_its_interval(shared_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv"
    small = tmp_path / "five.csv"
    small.write_text("".join(src.read_text().splitlines(keepends=True)[:50]))
    db = tmp_path / "i.db"
    res = barcast(capsys, "--db", str(db), "import-bars", str(small), "--series", "binance:BTC-USDT:1m")
    assert res.code == 2
    assert "5m" in res.err and "not 1m" in res.err and str(small) in res.err
    res = barcast(capsys, "--db", str(db), "import-bars", str(small), "--exchange", "binance", "--symbol",
                  "BTC-USDT", "--interval", "1m")
    assert res.code == 2 and "its interval is 5m" in res.err
