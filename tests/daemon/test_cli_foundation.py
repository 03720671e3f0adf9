"""The foundation's CLI on real files: import/export round trip, bad input, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.config import load_config
from db.errors import ConfigError
from tests.daemon.clirun import barcast

FILES = {
    "btcusdt_binance_5m_2020-12_2021-07.csv": ("binance", "BTC-USDT", "5m"),
    "ethusdt_binance_5m_2020-12_2021-07.csv": ("binance", "ETH-USDT", "5m"),
    "btcusdt_binance_1m_2021-04_2021-05.csv": ("binance", "BTC-USDT", "1m"),
    "ethusdt_binance_1m_2021-04_2021-05.csv": ("binance", "ETH-USDT", "1m"),
    "btcusdt_binance_1m_2024-01.csv": ("binance", "BTC-USDT", "1m"),
    "ethusdt_binance_1m_2024-01.csv": ("binance", "ETH-USDT", "1m"),
    "btcusd_bitstamp_1m_2025-01_2025-02.csv": ("bitstamp", "BTC-USD", "1m"),
}


def test_every_shared_file_round_trips_byte_for_byte(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sorted(FILES) == sorted(p.name for p in (shared_dir / "data").glob("*.csv"))
    for name, (exchange, symbol, interval) in FILES.items():
        db = f"sqlite:///{tmp_path / (name + '.db')}"
        path = shared_dir / "data" / name
        res = barcast(capsys, "--db", db, "import-bars", str(path), "--exchange", exchange, "--symbol", symbol,
                      "--interval", interval)
        assert res.code == 0, res.err
        res = barcast(capsys, "--db", db, "bars", "--exchange", exchange, "--symbol", symbol,
                      "--interval", interval, "--format", "csv")
        assert res.code == 0, res.err
        assert res.out == path.read_text(), f"{name} did not round-trip"


def test_round_trip_and_resample_on_postgresql(
    shared_dir: Path, pg_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shared_dir / "data" / "btcusdt_binance_1m_2021-04_2021-05.csv"
    res = barcast(capsys, "--db", pg_db_url, "import-bars", str(path), "--exchange", "binance", "--symbol",
                  "BTC-USDT", "--interval", "1m", "--resample", "5m")
    assert res.code == 0, res.err
    res = barcast(capsys, "--db", pg_db_url, "bars", "--exchange", "binance", "--symbol", "BTC-USDT",
                  "--interval", "1m", "--format", "csv")
    assert res.out == path.read_text()
    # the 1m file rolled up agrees with the real 5m file on open/close (SOURCES.md cross-check)
    res = barcast(capsys, "--db", pg_db_url, "bars", "--exchange", "binance", "--symbol", "BTC-USDT",
                  "--format", "csv")
    rolled = {ln.split(",")[0]: ln.split(",") for ln in res.out.splitlines()[1:]}
    real = {ln.split(",")[0]: ln.split(",") for ln in
            (shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv").read_text().splitlines()[1:]}
    common = rolled.keys() & real.keys()
    assert len(common) > 12_000
    same_oc = sum(rolled[t][1] == real[t][1] and rolled[t][4] == real[t][4] for t in common)
    assert same_oc == len(common)


BAD_ROWS = [
    ("1606780800,19695.87,19720.0,19578.96\n", "expected 6 fields"),
    ("1606780801,1,2,1,1,1\n", "not aligned"),
    ("1606783800,1,1,2,1,1\n", "high 1 is below low 2"),
    ("1606783800,1,2,1,1,-5\n", "negative volume"),
    ("1606783800,1,2,1,abc,1\n", "close 'abc' is not a decimal"),
    ("1606780800,1,2,1,1,1\n", "is not after the previous row"),
    ("1606783800,1,2,1,3,1\n", "open/close outside the high-low range"),
    ("16067808xx,1,2,1,1,1\n", "not whole Unix seconds"),
]


@pytest.mark.parametrize(("bad", "why"), BAD_ROWS)
def test_bad_csv_row_names_line_and_commits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, why: str
) -> None:
    path = tmp_path / "bad.csv"
    good = "".join(f"{1606780800 + 300 * i},1,2,1,1,1\n" for i in range(1, 4))
    path.write_text("timestamp,open,high,low,close,volume\n" + good + bad)
    db = f"sqlite:///{tmp_path / 'b.db'}"
    res = barcast(capsys, "--db", db, "import-bars", str(path), "--exchange", "binance", "--symbol", "BTC-USDT")
    assert res.code == 2
    assert "bad.csv:5: " in res.err and why in res.err, res.err
    assert "Traceback" not in res.err
    # the file is checked before the database is opened: nothing stored, not even a database made
    res = barcast(capsys, "--db", db, "db", "stats", "--format", "json")
    assert res.code == 2 and "does not exist" in res.err
    assert barcast(capsys, "--db", db, "db", "upgrade").code == 0
    res = barcast(capsys, "--db", db, "db", "stats", "--format", "json")
    assert json.loads(res.out)["tables"]["bars"] == 0


def test_db_stats_json(shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    barcast(capsys, "--db", db, "import-bars", str(shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv"),
            "--exchange", "binance", "--symbol", "BTC-USDT")
    doc = json.loads(barcast(capsys, "--db", db, "db", "stats", "--format", "json").out)
    assert doc["tables"]["bars"] == 65_741
    assert doc["series"] == [{"series": "binance:BTC-USDT:5m", "bars": 65_741,
                              "first": "2020-12-01T00:00:00Z", "last": "2021-07-17T21:05:00Z"}]


def test_config_file_env_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "barcast.toml"
    cfg.write_text('[database]\nurl = "sqlite:////tmp/x.db"\n\n[[series]]\nexchange = "kraken"\nsymbol = "ETH-USD"\n')
    loaded = load_config(cfg, env={"BARCAST_LOGGING__LEVEL": "debug"})
    assert loaded.database_url == "sqlite:////tmp/x.db" and loaded.logging.level == "debug"
    assert [str(k) for k in loaded.series_keys] == ["kraken:ETH-USD:5m"]
    assert load_config(cfg, env={}, db_url="sqlite:////tmp/y.db").database_url == "sqlite:////tmp/y.db"

    cases = [
        ('[database]\nurll = "x"\n', "unknown config key 'database.urll'"),
        ("[logging]\nlevel = 3\n", "logging.level: 3 is not one of"),
        ('[[series]]\nexchange = "kraken"\nsymbol = "ETH-USD"\ninterval = "7m"\n', "series[0].interval: '7m'"),
        ("[logging\n", "not valid TOML"),
        ("bogus = 1\n", "unknown config key 'bogus'"),
    ]
    for text, why in cases:
        cfg.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(cfg, env={})
        assert why in str(info.value) and str(cfg) in str(info.value)
        res = barcast(capsys, "--config", str(cfg), "config", "show")
        assert res.code == 2 and why in res.err

    with pytest.raises(ConfigError, match=r"logging\.format.*set by environment variable BARCAST_LOGGING__FORMAT"):
        load_config(None, env={"BARCAST_LOGGING__FORMAT": "xml"})
    with pytest.raises(ConfigError, match=r"unknown config key 'api\.prot'.*BARCAST_API__PROT"):
        load_config(None, env={"BARCAST_API__PROT": "1"})
    monkeypatch.chdir(tmp_path)
    cfg.write_text('[logging]\nformat = "json"\n')
    res = barcast(capsys, "config", "show")  # found on the search path: ./barcast.toml
    assert res.code == 0 and 'format = "json"' in res.out and str(cfg) in res.out


def test_exchange_names_and_urls_are_checked_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt exchange or a URL the feed cannot use stops the program naming the key (exit 2),
    in `config check` too; before, `ingest` reconnected forever to `ws_url = "notaurl"` (an
    error line per attempt, exit 0), a misspelt `[exchanges.binanace]` was ignored (the real
    exchange was used) and `config check` passed a series on an unknown exchange."""
    cfg = tmp_path / "barcast.toml"
    cases = [
        ('[[series]]\nexchange = "binanace"\nsymbol = "BTC-USDT"\n', "series[0].exchange: 'binanace' is not one of"),
        ('[exchanges.binanace]\nws_url = "ws://127.0.0.1:9/ws"\n', "exchanges.binanace: not an exchange"),
        ('[exchanges.binance]\nws_url = "notaurl"\n', "exchanges.binance.ws_url: 'notaurl' is not a valid ws://"),
        ('[exchanges.binance]\nws_url = "http://127.0.0.1:9/ws"\n', "exchanges.binance.ws_url"),
        ('[exchanges.kraken]\nrest_url = "127.0.0.1:8080"\n', "exchanges.kraken.rest_url: '127.0.0.1:8080' is not"),
        ('[exchanges.kraken]\nrest_url = "http://127.0.0.1:99999"\n', "exchanges.kraken.rest_url"),
    ]
    for text, why in cases:
        cfg.write_text(text)
        res = barcast(capsys, "--config", str(cfg), "config", "check")
        assert res.code == 2 and why in res.err, (text, res.err)
    db = tmp_path / "x.db"
    cfg.write_text('[exchanges.binance]\nws_url = "notaurl"\n')
    res = barcast(capsys, "--config", str(cfg), "--db", str(db), "ingest", "--series", "binance:BTC-USDT",
                  "--duration", "1s")
    assert res.code == 2 and "exchanges.binance.ws_url" in res.err and not db.exists()
    cfg.write_text('[exchanges.binance]\nws_url = "wss://127.0.0.1:9443/ws"\nrest_url = "http://127.0.0.1:8080"\n'
                   '[exchanges.kraken]\nws_url = ""\n')
    assert barcast(capsys, "--config", str(cfg), "config", "check").code == 0


def test_placeholder_commands_say_so_and_fail(capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli import main

    placeholders = [n for n, c in main.commands.items() if (c.help or "").startswith("[not implemented yet")]
    for name in placeholders:
        res = barcast(capsys, name)
        assert res.code == 1 and "not implemented yet" in res.err
