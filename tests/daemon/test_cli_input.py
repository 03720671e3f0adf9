"""Bad input to the offline CLI and the config: one line naming what was wrong, exit 2, nothing
stored, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_config
from db.errors import ConfigError
from tests.daemon.clirun import barcast

# --- configuration -------------------------------------------------------------------------------

BAD_CONFIGS = [
    # `config check` used to say OK and `run` then failed on the unknown exchange, naming no key
    ('[[series]]\nexchange = "kraken2"\nsymbol = "ETH-USD"\n', "series[0].exchange: 'kraken2' is not one of"),
    # used to be "bad symbol 'ETHUSD'…" without the key or the file
    ('[[series]]\nexchange = "kraken"\nsymbol = "ETHUSD"\n', "series[0].symbol: bad symbol 'ETHUSD'"),
    # a misspelt exchange table was ignored: the daemon then connected to the real exchange
    ('[exchanges.krakn]\nws_url = "ws://127.0.0.1:9000"\n', "exchanges.krakn: not an exchange barcast knows"),
    ('[exchanges.kraken]\nws_url = "127.0.0.1:9000"\n', "exchanges.kraken.ws_url: '127.0.0.1:9000' is not a valid ws://"),
    ('[exchanges.kraken]\nrest_url = "ws://x"\n', "exchanges.kraken.rest_url: 'ws://x' is not a valid http://"),
    # `config check` said OK, and every command then refused the database
    ('[database]\nurl = "mysql://u@h/db"\n', "database.url: unsupported database URL 'mysql://u@h/db'"),
    ('[database]\nurl = "postgresql://u@h:pg/db"\n', "database.url: bad database URL"),
    # another driver than psycopg 3 (other tools' habit) passed `config check`, then every command
    # died in a ModuleNotFoundError (or, with psycopg_async, a MissingGreenlet) traceback
    ('[database]\nurl = "postgresql+psycopg2://u:pw@h/db"\n',
     "database.url: unsupported driver 'psycopg2' in database URL 'postgresql+psycopg2://u:***@h/db'"),
]


@pytest.mark.parametrize(("text", "why"), BAD_CONFIGS)
def test_bad_config_names_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                       why: str) -> None:
    cfg = tmp_path / "barcast.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    assert why in str(info.value) and str(cfg) in str(info.value)
    res = barcast(capsys, "--config", str(cfg), "config", "check")
    assert res.code == 2 and why in res.err and "Traceback" not in res.err


def test_bad_db_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", "postgresql://u@h:pg/db", "db", "stats")  # was a ValueError traceback
    assert res.code == 2 and "--db: bad database URL 'postgresql://u@h:pg/db'" in res.err, res.err


@pytest.mark.parametrize("url", ["postgresql+asyncpg://u:pw@127.0.0.1/db", "postgresql+psycopg_async://u:pw@127.0.0.1/db",
                                 "sqlite+aiosqlite:////nonexistent/b.db"])
def test_a_database_url_with_another_driver_is_one_line(capsys: pytest.CaptureFixture[str], url: str) -> None:
    res = barcast(capsys, "--db", url, "db", "stats")
    assert res.code == 2 and "Traceback" not in res.err, res.err
    assert f"--db: unsupported driver '{url.split('+')[1].split(':')[0]}'" in res.err and "pw" not in res.err, res.err


def test_config_show_hides_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets go in an EnvironmentFile (README, systemd); `config show` printed them in clear, while
    every other output (status, errors) hides the database password."""
    monkeypatch.setenv("BARCAST_API__TOKEN", "t0ken-s3cret")
    monkeypatch.setenv("BARCAST_DATABASE__URL", "postgresql://barcast:pw-s3cret@db.example/barcast")
    cfg = tmp_path / "barcast.toml"
    cfg.write_text('[logging]\nlevel = "info"\n')
    res = barcast(capsys, "--config", str(cfg), "config", "show")
    assert res.code == 0 and "s3cret" not in res.out, res.out
    assert 'url = "postgresql://barcast:***@db.example/barcast"' in res.out and 'token = "***"' in res.out


def test_good_exchange_overrides_pass(tmp_path: Path) -> None:
    cfg = tmp_path / "barcast.toml"
    cfg.write_text('[exchanges.kraken]\nws_url = "ws://127.0.0.1:9000"\nrest_url = "http://127.0.0.1:9001"\n'
                   '[[series]]\nexchange = "Kraken"\nsymbol = "eth-usd"\n')
    loaded = load_config(cfg, env={})
    assert loaded.exchange("kraken").ws_url == "ws://127.0.0.1:9000"
    assert [str(k) for k in loaded.series_keys] == ["kraken:ETH-USD:5m"]


def test_config_file_not_utf8_or_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "barcast.toml"
    cfg.write_bytes(b"\xff\xfe[api]\nport = 1\n")  # a UTF-16 editor's file: used to be a traceback
    res = barcast(capsys, "--config", str(cfg), "config", "check")
    assert res.code == 2 and f"config file {cfg}: not UTF-8 text" in res.err and "Traceback" not in res.err
    res = barcast(capsys, "--config", str(tmp_path), "config", "check")
    assert res.code == 2 and f"config file {tmp_path} is not a file" in res.err


@pytest.mark.parametrize(("env", "why"), [
    ({"BARCAST_DATABSE__URL": "sqlite:////x.db"}, "unknown config key 'databse'"),
    ({"BARCAST_API__PORT__X": "1"}, "config key api.port: expected an integer"),
    ({"BARCAST_SERIES__EXCHANGE": "kraken"}, "config key series: expected list of table"),
    ({"BARCAST_EXCHANGES__KRAKN__WS_URL": "ws://x"}, "exchanges.krakn: not an exchange"),
    # TOML's inf passed every `> 0` check: the daemon then failed on timedelta(days=inf)
    ({"BARCAST_FEEDS__BACKFILL_DAYS": "inf"}, "config key feeds.backfill_days: expected a finite number, got inf"),
    ({"BARCAST_RETRAIN__EVERY_HOURS": "+inf"}, "retrain.every_hours: expected a finite number"),
    # unchecked before: a negative age rotated the forecast log at every line (older lines past
    # log_backups files lost), a negative max_future_s dropped every live trade as "future"
    ({"BARCAST_FORECAST__LOG_MAX_AGE_HOURS": "-1"}, "forecast.log_max_age_hours: must be >= 0"),
    ({"BARCAST_FEEDS__MAX_FUTURE_S": "-5"}, "feeds.max_future_s: must be >= 0"),
    ({"BARCAST_FEEDS__REST_TIMEOUT_S": "0"}, "feeds.rest_timeout_s: must be > 0"),
    ({"BARCAST_FEEDS__PING_INTERVAL_S": "0"}, "feeds.ping_interval_s: must be > 0"),
])
def test_env_error_names_the_variable(env: dict[str, str], why: str) -> None:
    """The variable is named also when the error is about a key above the one it sets (these
    used to name neither the variable nor any file)."""
    with pytest.raises(ConfigError) as info:
        load_config(None, env={**env, "BARCAST_API__HOST": "127.0.0.1"})
    msg = str(info.value)
    assert why in msg and f"(set by environment variable {next(iter(env))})" in msg
    assert "BARCAST_API__HOST" not in msg


def test_file_error_does_not_blame_an_unrelated_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "barcast.toml"
    cfg.write_text("foo = 1\n")  # the message lists `api` among the valid keys
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={"BARCAST_API__PORT": "8788"})
    assert str(cfg) in str(info.value) and "BARCAST_API__PORT" not in str(info.value)


# --- import-bars -----------------------------------------------------------------------------------

GOOD_ROWS = "".join(f"{1606780800 + 300 * i},1,2,1,1,1\n" for i in range(1, 4))

#: Rows `Decimal()` or `datetime` took, or that escaped as tracebacks, before the file check knew them.
BAD_NUMBERS = [
    ("1606782000,1,2,1,1,7_100\n", "volume '7_100' is not a decimal number"),  # was stored as 7100
    ("1606782000,1,2,1,1,\u0667\u0661\u0660\n", "volume '\u0667\u0661\u0660' is not a decimal"),  # was 710
    ("1606782000,1e14,1e15,1,1,1\n", "high '1e15' is out of range"),  # no market trades there
    ("1606782000,1,2,1,1,1e400\n", "volume '1e400' is out of range"),
    ("1606782000,1,2,1,1,1e999999\n", "volume '1e999999' is not a decimal number"),  # a million digits out
    ("1606782000,1,2,1e-40,1,1\n", "low '1e-40' is out of range"),
    ("1606782000,1,2,1,1,-inf\n", "volume '-inf' is not a finite number"),
    ("99999999999999999900,1,2,1,1,1\n", "is out of range (beyond year 9999)"),  # was OverflowError
    ("253402300800,1,2,1,1,1\n", "is out of range (beyond year 9999)"),  # was ValueError
    ("1" * 5000 + ",1,2,1,1,1\n", "is out of range"),  # int() refuses > 4300 digits
    ("1606782000\u00b2,1,2,1,1,1\n", "is not whole Unix seconds"),  # '²'.isdigit() is True
]


@pytest.mark.parametrize(("bad", "why"), BAD_NUMBERS)
def test_bad_number_or_time_names_line_and_stores_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, why: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + GOOD_ROWS + bad, encoding="utf-8")
    db = tmp_path / "b.db"
    res = barcast(capsys, "--db", f"sqlite:///{db}", "import-bars", str(path), "--series", "binance:BTC-USDT")
    assert res.code == 2, res.err
    assert "bad.csv:5: " in res.err and why in res.err and "Traceback" not in res.err, res.err
    assert not db.exists()


def test_number_forms_files_write_are_still_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + GOOD_ROWS
                    + '1606782000,+1,2.50,.5,1,1e-05\n1606782300,1,2,1,1,"0"\n')
    db = f"sqlite:///{tmp_path / 'ok.db'}"
    res = barcast(capsys, "--db", db, "import-bars", str(path), "--series", "binance:BTC-USDT")
    assert res.code == 0, res.err
    out = barcast(capsys, "--db", db, "bars", "--series", "binance:BTC-USDT", "--format", "csv").out
    assert out.splitlines()[-2:] == ["1606782000,1,2.50,0.5,1,0.00001", "1606782300,1,2,1,1,0"]


def test_a_byte_order_mark_is_not_part_of_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_dir: Path
) -> None:
    """Excel saves "CSV UTF-8" with a BOM; the same real rows import with it or without."""
    rows = (shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv").read_text().splitlines(keepends=True)[:50]
    out = {}
    for name, prefix in (("plain", ""), ("bom", "\ufeff")):
        path = tmp_path / f"{name}.csv"
        path.write_text(prefix + "".join(rows).replace("\n", "\r\n"), encoding="utf-8", newline="")
        db = f"sqlite:///{tmp_path / name}.db"
        res = barcast(capsys, "--db", db, "import-bars", str(path), "--series", "binance:BTC-USDT")
        assert res.code == 0, res.err
        out[name] = barcast(capsys, "--db", db, "bars", "--series", "binance:BTC-USDT", "--format", "csv").out
    assert out["bom"] == out["plain"] == "".join(rows)  # byte for byte the file's rows, no BOM


def test_bad_resample_creates_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + GOOD_ROWS)
    db = tmp_path / "b.db"
    res = barcast(capsys, "--db", f"sqlite:///{db}", "import-bars", str(path), "--series", "binance:BTC-USDT",
                  "--resample", "1m")
    assert res.code == 2 and "cannot resample 5m bars to 1m" in res.err
    assert not db.exists()  # used to be left behind, empty


# --- times and durations -----------------------------------------------------------------------------


@pytest.fixture
def bars_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "ok.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + GOOD_ROWS)
    db = f"sqlite:///{tmp_path / 'ok.db'}"
    assert barcast(capsys, "--db", db, "import-bars", str(path), "--series", "binance:BTC-USDT").code == 0
    return db


@pytest.mark.parametrize(("args", "why"), [
    (["--since", "99999999999999"], "--since: '99999999999999' is out of range"),  # was OverflowError
    (["--since", "253402300800"], "--since: '253402300800' is out of range"),  # was ValueError (year 10000)
    (["--until", "9999-12-31T23:00:00-05:00"], "is out of range"),  # past 9999 in UTC: OverflowError
    (["--since", "9999999999999d"], "--since: '9999999999999d' is more than 100 years ago"),  # timedelta
    (["--since", "2020-12-02", "--until", "2020-12-01"], "--since 2020-12-02 is not before --until 2020-12-01"),
])
def test_bad_time_range_is_one_line(bars_db: str, capsys: pytest.CaptureFixture[str], args: list[str],
                                    why: str) -> None:
    res = barcast(capsys, "--db", bars_db, "bars", "--series", "binance:BTC-USDT", *args)
    assert res.code == 2 and why in res.err and "Traceback" not in res.err, res.err
    res = barcast(capsys, "--db", bars_db, "evaluate", "--series", "binance:BTC-USDT", "--models", "persistence",
                  *args)
    assert res.code == 2 and why in res.err, res.err


def test_time_forms_still_read(bars_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for since in ("1606781400", "2020-12-01T00:10:00Z", "2020-12-01T01:10:00+01:00", "2020-12-01 00:10"):
        res = barcast(capsys, "--db", bars_db, "bars", "--series", "binance:BTC-USDT", "--since", since,
                      "--until", "1606782000", "--format", "csv")
        assert res.out.splitlines()[1:] == ["1606781400,1,2,1,1,1", "1606781700,1,2,1,1,1"], since


def test_bad_duration_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "record", "--exchange", "binance", "--symbols", "BTC-USDT", "--url", "ws://127.0.0.1:9",
                  "--out", str(tmp_path / "c.txt"), "--duration", "99999999999999d")
    assert res.code == 2 and "--duration: '99999999999999d' is longer than 100 years" in res.err, res.err


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), (" 30M ", 1800), ("12h", 43200), ("7D", 604800), ("2w", 1209600),
    ("\u0663d", None), ("3", None), ("d", None), ("-3d", None), ("3y", None), ("9" * 31 + "d", None),
])
def test_one_duration_parser_for_ages_and_windows(text: str, seconds: int | None) -> None:
    """`--since 3d`, `--window 3d` and `/accuracy?window=3d` read the same texts: the window parser
    took Arabic-Indic digits ('\u0663d' as 3 days) where the age parser refused them."""
    from datetime import timedelta

    from daemon.cli.common import parse_time
    from daemon.ops.durations import duration_seconds
    from daemon.ops.reports import parse_window
    from db.errors import InputError

    assert duration_seconds(text) == seconds
    if seconds is None:
        with pytest.raises(InputError, match="not a window"):
            parse_window(text)
    else:
        assert parse_window(text) == timedelta(seconds=seconds)
        got = parse_time(text, "--since")
        assert got is not None
