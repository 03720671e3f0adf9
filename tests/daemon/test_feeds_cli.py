"""The feed commands through the real `barcast` entry point."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from tests.daemon.clirun import barcast
from tests.daemon.test_feeds_connection import walk

CAPTURES = {
    "coinbase": ("COINBASE.ws.28.0", 107),
    "binance": ("BINANCE.ws.1.0", 2),
    "kraken": ("KRAKEN.ws.48.0", 10),
    "poloniex": ("POLONIEX.ws.1.0", 6),
}


@pytest.mark.parametrize("exchange", sorted(CAPTURES))
def test_parse_prints_normalised_trades(shared_dir: Path, capsys: pytest.CaptureFixture[str], exchange: str) -> None:
    name, n = CAPTURES[exchange]
    r = barcast(capsys, "parse", "--exchange", exchange, str(shared_dir / "captures" / name))
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert len(rows) == n
    assert set(rows[0]) == {"exchange", "symbol", "trade_id", "time", "price", "size", "side"}
    assert all(isinstance(x["price"], str) and x["time"].endswith("Z") for x in rows)
    assert f"{n} trades" in r.err and "malformed=0" in r.err


def test_parse_csv_and_counts_malformed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text(
        '{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"19695.87","q":"0.5","T":1608000000000,"m":true}\n'
        '{"e":"trade","p":\n'
        "garbage\n".replace("garbage", "{}")
    )
    r = barcast(capsys, "parse", "--exchange", "binance", "--format", "csv", str(f))
    assert r.code == 0
    assert r.out.splitlines() == [
        "exchange,symbol,trade_id,time,price,size,side",
        "binance,BTC-USDT,7,2020-12-15T02:40:00.000000Z,19695.87,0.5,sell",
    ]
    assert "malformed=2" in r.err and "bad_json" in r.err


def test_parse_summary_prints_counts_and_rate_only(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = str(shared_dir / "captures" / "COINBASE.ws.28.0")
    r = barcast(capsys, "parse", "--exchange", "coinbase", "--summary", capture)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert "9946 messages" in lines[0] and "107 trades" in lines[0] and "malformed=0" in lines[0]
    assert lines[1].startswith("parsed in ") and lines[1].endswith(" messages/s")
    assert len(lines) == 2  # no trade lines


def test_parse_missing_file_is_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    r = barcast(capsys, "parse", "--exchange", "kraken", "/nonexistent/capture")
    assert r.code == 2 and "no such file" in r.err


@pytest.fixture
def sim_in_thread() -> Iterator[ExchangeSimulator]:
    """A simulator on its own loop in a thread (the CLI under test runs its own asyncio loop)."""
    loop = asyncio.new_event_loop()
    sim = ExchangeSimulator(PROTOCOLS["kraken"], [SimSeries("BTC-USD", tuple(walk(200)))], speed=600, heartbeat_s=0.05)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(sim.start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    yield sim
    asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def test_record_writes_the_capture_format(
    sim_in_thread: ExchangeSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec.ws"
    r = barcast(
        capsys,
        "record",
        "--exchange",
        "kraken",
        "--symbols",
        "BTC-USD",
        "--out",
        str(out),
        "--url",
        sim_in_thread.ws_url,
        "--max-messages",
        "12",
        "--duration",
        "20s",
    )
    assert r.code == 0, r.err
    lines = out.read_text().splitlines()
    assert " <-> " in lines[0] and " <- " in lines[1] and '"subscribe"' in lines[1]
    r = barcast(capsys, "parse", "--exchange", "kraken", str(out))
    assert r.code == 0 and "malformed=0" in r.err and "heartbeat=" in r.err
    assert len(r.out.splitlines()) >= 1  # the recorded trades parse back


def test_demo_shows_bars_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BARCAST_PATHS__DATA_DIR", str(tmp_path))
    argv = ("demo", "--speed", "3000", "--duration", "5s", "--api-port", "0", "--format", "json")
    r = barcast(capsys, *argv)
    assert r.code == 0, r.err
    summary = json.loads(r.out)  # stdout is the summary document only
    closed = [line for line in r.err.splitlines() if line.endswith(" closed")]
    assert len(closed) >= 5 and "binance:BTC-USDT:5m" in closed[0]
    # the whole service runs: every live bar gets a forecast line
    forecasts = [line for line in r.err.splitlines() if line.startswith("forecast ")]
    assert len(forecasts) >= len(closed)
    assert sum(summary["forecasts"].values()) == len(forecasts)
    db_path = tmp_path / "demo" / "demo.db"
    assert summary["database"] == f"sqlite:///{db_path}" and db_path.is_file()
    assert f"barcast --db sqlite:///{db_path} forecasts --latest" in r.err
    assert summary["bars"]["history_stored"] == 1200
    assert summary["bars"]["stored"] >= 1200 + len(closed)
    # a second run continues the same database where the first stopped
    r = barcast(capsys, *argv)
    assert r.code == 0, r.err
    again = json.loads(r.out)
    assert again["bars"]["stored"] > summary["bars"]["stored"]
    assert again["bars"]["history_stored"] < 1200
    # and says so: the bars it continues after, and the model that serves from the start
    assert f"continuing after the {summary['bars']['stored']} bars of the previous run" in r.err
    first_model = summary["model"]["serving"]
    if first_model and first_model != "persistence":
        assert f"  model     {first_model} serves (from the previous run)" in r.err
    else:
        assert "trained in the background while persistence serves" in r.err
    # --fresh starts over
    r = barcast(capsys, *argv, "--fresh")
    assert r.code == 0, r.err
    assert json.loads(r.out)["bars"]["history_stored"] == 1200


def test_demos_on_different_databases_keep_their_own_models_and_logs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.config import load_config
    from daemon.runner import demo_dir

    monkeypatch.setenv("BARCAST_PATHS__DATA_DIR", str(tmp_path / "data"))
    base = load_config(None)
    default = tmp_path / "data" / "demo"
    assert demo_dir(base) == demo_dir(base, f"sqlite:///{default / 'demo.db'}") == default
    pg = demo_dir(base, "postgresql://u@h/a")
    assert pg.parent == tmp_path / "data" and pg != default and pg != demo_dir(base, "postgresql://u@h/b")

    argv = ("demo", "--speed", "3000", "--duration", "5s", "--api-port", "0", "--format", "json")
    a, b = tmp_path / "a" / "one.db", tmp_path / "b" / "two.db"
    a.parent.mkdir()
    b.parent.mkdir()
    summaries = {}
    for db in (a, b):
        r = barcast(capsys, *argv, "--db", str(db))
        assert r.code == 0, r.err
        summaries[db] = json.loads(r.out)
        assert summaries[db]["forecast_log"].startswith(f"{db}.demo{os.sep}")
        assert Path(summaries[db]["forecast_log"]).is_file()
    assert not default.exists()  # neither touched the default demo's files
    kept = sorted(p.name for p in (Path(f"{a}.demo") / "models").iterdir())
    r = barcast(capsys, *argv, "--db", str(b), "--fresh")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (Path(f"{a}.demo") / "models").iterdir()) == kept  # b's --fresh left a's
    assert Path(summaries[a]["forecast_log"]).is_file()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--port", "70000"), ("--heartbeat", "0"), ("--heartbeat", "-1"), ("--drop-every", "0"),
     ("--drop-every", "-2"), ("--refuse", "-1"), ("--malformed-every", "0"), ("--malformed-every", "-3"),
     ("--stall-after", "-1")],
)
def test_exchange_sim_refuses_fault_and_port_values_out_of_range(tmp_path: Path, option: str, value: str) -> None:
    """Before, these started a simulator anyway: port 70000 a traceback, heartbeat 0 a busy loop
    broadcasting heartbeats, drop-every 0 no drops and -2 every connection closed at once,
    malformed-every -3 every 3rd trade. Now: exit 2 naming the option, before anything listens."""
    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n1608897600,1,2,1,2,3\n1608897900,2,2,1,1,3\n")
    # a process of its own: a simulator that starts serves until a signal (a failure, not a hang)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "daemon", "exchange-sim", "--protocol", "binance", "--bars", str(csv),
             "--symbol", "BTC-USDT", option, value],
            capture_output=True, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"exchange-sim {option} {value} started serving")
    assert r.returncode == 2 and option in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_exchange_sim_on_a_taken_port_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A port in use was a traceback (OSError from the event loop); now one line, exit 1."""
    import socket

    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n1608897600,1,2,1,2,3\n1608897900,2,2,1,1,3\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = barcast(capsys, "exchange-sim", "--protocol", "binance", "--bars", str(csv), "--symbol", "BTC-USDT",
                    "--port", str(port))
    assert r.code == 1, r.err
    assert f"exchange simulator: cannot listen on 127.0.0.1:{port}" in r.err and "Traceback" not in r.err
