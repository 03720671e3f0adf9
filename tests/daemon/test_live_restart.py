"""`barcast run` as a real process under a simulated systemd: sd_notify on a real datagram socket,
kill -9 mid-run, restart, SIGTERM. Nothing stored is lost or duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from tests.daemon.livehelp import SIM_START, config_text, real_bars, rows, seed_history

pytestmark = pytest.mark.slow

END = SIM_START + timedelta(hours=3)
HISTORY_END = datetime(2020, 12, 20, tzinfo=UTC)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_kill_9_and_restart_lose_and_duplicate_nothing(shared_dir: Path, tmp_path: Path) -> None:
    # the simulator plays on past END (a real exchange does not stop); assertions cover bars before END
    played = real_bars(shared_dir, END + timedelta(hours=2))
    bars = [b for b in played if b.open_time < END]
    db_path = tmp_path / "barcast.db"
    db_url = f"sqlite:///{db_path}"
    seed_history(db_url, played, HISTORY_END)
    notify_path = tmp_path / "notify.sock"
    messages: list[str] = []

    async def main() -> tuple[int, int | None]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()

        async def collect() -> None:
            while True:
                messages.append((await loop.sock_recv(sock, 4096)).decode())

        collector = asyncio.create_task(collect())
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(played))], speed=600,
                                start=SIM_START.timestamp(), heartbeat_s=0.05)
        async with sim:
            cfg = tmp_path / "barcast.toml"
            cfg.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url))
            env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000",
                   "BARCAST_CONFIG": str(cfg)}
            env.pop("WATCHDOG_PID", None)

            async def start() -> asyncio.subprocess.Process:
                return await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "daemon", "run", env=env,
                    stdout=asyncio.subprocess.DEVNULL, stderr=open(tmp_path / "daemon.log", "ab"))

            async def live_forecasts() -> int:
                found = await asyncio.to_thread(
                    rows, db_path, "SELECT count(DISTINCT issued_at) FROM forecasts WHERE issued_at >= "
                    f"'{SIM_START.strftime('%Y-%m-%d %H:%M:%S')}'")
                return int(found[0][0])

            first = await start()
            for _ in range(600):
                if await live_forecasts() >= 5:
                    break
                await asyncio.sleep(0.1)
            assert any("READY=1" in m for m in messages), messages
            first.kill()  # SIGKILL: no chance to clean up
            killed_rc = await first.wait()
            second = await start()
            last = bars[-1].open_time.strftime("%Y-%m-%d %H:%M:%S.%f")
            for _ in range(900):
                done = await asyncio.to_thread(
                    rows, db_path, f"SELECT count(*) FROM forecasts WHERE issued_at = '{last}'")
                if done[0][0]:
                    break
                await asyncio.sleep(0.1)
            second.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(second.wait(), 30)
        collector.cancel()
        sock.close()
        return killed_rc, rc

    killed_rc, rc = asyncio.run(main())
    log = (tmp_path / "daemon.log").read_text()
    assert killed_rc == -signal.SIGKILL
    assert rc == 0, log[-3000:]
    # bars: exactly the exchange's, once each
    stored = rows(db_path, "SELECT open_time, open, high, low, close, volume FROM bars "
                           f"WHERE open_time >= '{HISTORY_END.strftime('%Y-%m-%d %H:%M:%S')}' "
                           f"AND open_time < '{END.strftime('%Y-%m-%d %H:%M:%S')}' ORDER BY open_time")
    want = [(b.open_time, str(b.open), str(b.high), str(b.low), str(b.close), str(b.volume))
            for b in bars if b.open_time >= HISTORY_END]
    assert [(_t(r[0]), *r[1:]) for r in stored] == want
    # forecasts: one per bar from the restored window's last bar on, none missing, none twice
    fc = rows(db_path, "SELECT issued_at, model_id, count(*) FROM forecasts GROUP BY issued_at, model_id")
    per_bar = Counter(_t(r[0]) for r in fc if _t(r[0]) < END)
    assert set(per_bar.values()) == {1}
    assert all(r[2] == 16 for r in fc)
    expected = {HISTORY_END - timedelta(minutes=5)} | {b.open_time for b in bars if b.open_time >= HISTORY_END}
    assert set(per_bar) == expected, sorted(expected - set(per_bar))[:5]
    # the forecast log has each of them once, across both runs
    import orjson

    lines = [orjson.loads(x) for x in (tmp_path / "data" / "logs" / "forecasts.jsonl").read_text().splitlines()]
    logged = Counter(ln["issued_at"] for ln in lines if _t(ln["issued_at"][:-1]) < END)
    assert max(logged.values()) == 1
    assert set(logged) == {t.isoformat().replace("+00:00", "Z") for t in expected}
    # systemd saw the protocol
    joined = "\n".join(messages)
    assert joined.count("READY=1") == 2 and "WATCHDOG=1" in joined and "STATUS=" in joined
    assert "EXTEND_TIMEOUT_USEC=" in joined and "STOPPING=1" in joined
