"""`barcast tail`: the last lines, then new ones across rename rotation and truncation, like tail -F."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.live.forecastlog import ForecastLog
from daemon.ops import tail
from db.bars import read_bars
from db.engine import open_database
from db.records import Forecast
from tests.daemon.clirun import barcast
from tests.daemon.opsdata import ETH, FILES, forecasts_for


@pytest.fixture(scope="module")
def forecasts(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Forecast]:
    """Persistence forecasts issued on real bars, alternating BTC and ETH."""
    from dataclasses import replace

    from db.bars import upsert_bars
    from db.csvbars import read_bars_csv

    database = open_database(f"sqlite:///{tmp_path_factory.mktemp('tail') / 'bars.db'}")
    out: list[Forecast] = []
    try:
        for key, name in FILES.items():
            bars = read_bars_csv(shared_dir / "data" / name, exchange=key.exchange, symbol=key.symbol,
                                 interval=key.interval)[-80:]
            upsert_bars(database, [replace(b, source="import") for b in bars])
            stored = read_bars(database, key)
            out += [forecasts_for(stored, i, "persistence", datetime.now(UTC)) for i in range(40, 80)]
    finally:
        database.close()
    out.sort(key=lambda f: (f.issued_at, f.series))
    return out


def _ids(lines: list[bytes]) -> list[tuple[str, str]]:
    return [(o["series"], o["issued_at"]) for o in map(json.loads, lines)]


def test_follower_sees_every_line_once_across_rotation_and_truncation(
    tmp_path: Path, forecasts: list[Forecast]
) -> None:
    path = tmp_path / "forecasts.jsonl"
    log = ForecastLog(path, max_bytes=4000, max_age_s=0, backups=3)  # rotates every few lines
    log.write(forecasts[:3])
    follower = tail.Follower(path, from_end=True)
    assert follower.poll() == []  # starts at the end, like tail -f
    seen: list[bytes] = []
    for i, f in enumerate(forecasts[3:60]):
        log.write([f])
        if i % 2:  # a poll every other line; rotation comes every ~8 lines
            seen += follower.poll()
    seen += follower.poll()
    assert path.with_name("forecasts.jsonl.2").exists(), "the log did not rotate"
    assert _ids(seen) == [(str(f.series), f.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")) for f in forecasts[3:60]]

    # Rotation by hand (rename, then a new file) with lines still appended to the old one first.
    os.rename(path, path.with_name("manual.old"))
    with path.with_name("manual.old").open("ab") as fh:
        fh.write(b'{"series": "late", "issued_at": "x"}\n')
    path.write_bytes(b'{"series": "new", "issued_at": "y"}\n{"series": "partial"')
    assert _ids(follower.poll()) == [("late", "x"), ("new", "y")]
    with path.open("ab") as fh:
        fh.write(b', "issued_at": "z"}\n')
    assert _ids(follower.poll()) == [("partial", "z")]

    # Truncation in place (copytruncate style): reading restarts at the start.
    with path.open("r+b") as fh:
        fh.truncate(0)
    path.write_bytes(b'{"series": "after-truncate", "issued_at": "t"}\n')
    assert _ids(follower.poll()) == [("after-truncate", "t")]
    follower.close()
    log.close()


def test_recent_lines_reach_into_the_rotated_file(tmp_path: Path, forecasts: list[Forecast]) -> None:
    path = tmp_path / "forecasts.jsonl"
    log = ForecastLog(path, max_bytes=3000, max_age_s=0, backups=2)
    log.write(forecasts[:20])
    for f in forecasts[20:30]:
        log.write([f])
    log.close()
    got = tail.recent_lines(path, 6)
    assert _ids(got) == [(str(f.series), f.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")) for f in forecasts[24:30]]
    assert tail.last_lines(tmp_path / "missing", 3) == []


def test_tail_cli_formats_and_series_filter(
    tmp_path: Path, forecasts: list[Forecast], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "forecasts.jsonl"
    log = ForecastLog(path)
    log.write(forecasts[:20])
    log.close()
    res = barcast(capsys, "tail", "--file", str(path), "-n", "4", "--format", "json")
    assert res.code == 0, res.err
    assert [json.loads(x)["issued_at"] for x in res.out.splitlines()] == [
        f.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ") for f in forecasts[16:20]
    ]
    res = barcast(capsys, "tail", "--file", str(path), "-n", "3", "--series", "binance:ETH-USDT")
    lines = res.out.splitlines()
    assert len(lines) == 3 and all("binance:ETH-USDT:5m" in ln for ln in lines)
    f = [f for f in forecasts[:20] if f.series == ETH][-1]
    assert lines[-1].startswith(f.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert f"last {f.last_close}" in lines[-1] and "+16 " in lines[-1] and "(+0.00%)" in lines[-1]
    assert lines[-1].endswith("persistence")
    res = barcast(capsys, "tail", "--file", str(tmp_path / "nope.jsonl"))
    assert res.code == 1 and "no forecast log" in res.err


@pytest.mark.parametrize("content", [b"", b"no newline yet", b"a\n", b"a\nbb\n\nccc\n  \ndddd", b"\n\nx\nyy\n"])
@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
def test_backwards_reads_the_complete_lines_whatever_the_block(tmp_path: Path, content: bytes, block: int) -> None:
    path = tmp_path / "log"
    path.write_bytes(content)
    complete = [ln for ln in content.split(b"\n")[:-1] if ln.strip()]  # after the last newline: in progress
    assert list(tail.backwards(path, block=block)) == complete[::-1]
    assert tail.last_lines(path, 2, block=block) == complete[-2:]


def test_tail_n_of_one_series_among_many_finds_n_lines(
    tmp_path: Path, forecasts: list[Forecast], capsys: pytest.CaptureFixture[str]
) -> None:
    """`tail -n 3 --series X` prints X's last 3 forecasts however many other series write to the log,
    reaching into the rotated file; it used to look at only the last 50 × n lines, so with more
    than 50 series (one line each per bar) it printed fewer, or none."""
    path = tmp_path / "forecasts.jsonl"
    eth = [f for f in forecasts if f.series == ETH][:4]
    rotated = path.with_name("forecasts.jsonl.1")
    noise = [json.dumps({"series": f"binance:S{i}-USDT:5m", "exchange": "binance", "symbol": f"S{i}-USDT",
                         "interval": "5m", "issued_at": "2021-07-17T21:00:00Z"}) for i in range(200)]
    log = ForecastLog(rotated)
    log.write(eth[:2])  # the older two are in the rotated file, behind 200 lines of other series
    log.close()
    with rotated.open("a") as fh:
        fh.write("\n".join(noise) + "\n")
    log = ForecastLog(path)
    log.write(eth[2:])
    log.close()
    with path.open("a") as fh:
        fh.write("\n".join(noise) + "\n" + '{"series": "torn')  # a partial last line is not a line
    res = barcast(capsys, "tail", "--file", str(path), "-n", "3", "--series", str(ETH), "--format", "json")
    assert res.code == 0, res.err
    assert [json.loads(x)["issued_at"] for x in res.out.splitlines()] == [
        f.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ") for f in eth[1:]
    ]
    assert len(tail.recent_lines(path, 1000)) == 2 * len(noise) + 4
    assert tail.last_lines(path, 1) == [noise[-1].encode()]


def test_tail_follow_process_across_rotation(tmp_path: Path, forecasts: list[Forecast]) -> None:
    """The real `barcast tail -f` process keeps printing while the daemon's writer rotates the log."""
    path = tmp_path / "forecasts.jsonl"
    log = ForecastLog(path, max_bytes=6000, max_age_s=0, backups=20)
    log.write(forecasts[:2])
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "tail", "-f", "-n", "1", "--format", "json", "--file", str(path),
         "--interval", "0.02"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw)

    threading.Thread(target=pump, daemon=True).start()

    def next_obj() -> dict[str, str]:
        return json.loads(lines.get(timeout=20))  # type: ignore[no-any-return]

    try:
        first = next_obj()  # printed once the follower is in place
        assert first["issued_at"] == forecasts[1].issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        expected = forecasts[2:30]
        for f in expected:
            log.write([f])
            time.sleep(0.03)
        got = [next_obj() for _ in expected]
        assert [(g["series"], g["issued_at"]) for g in got] == [
            (str(f.series), f.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")) for f in expected
        ]
        assert path.with_name("forecasts.jsonl.3").exists(), "the log did not rotate"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
