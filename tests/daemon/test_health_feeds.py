"""/health is not ready once every message from a feed has stopped, naming the feed, and the
status shows the reconnect attempts that followed."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from daemon.config import load_config
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.live.notify import Notifier
from daemon.live.service import FEED_SILENCE_FACTOR, Service
from tests.daemon.livehelp import SIM_START, config_text, real_bars, seed_history


async def _poll(client: httpx.AsyncClient, want: int, limit_s: float = 90.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        resp = await client.get("/health")
        if resp.status_code == want or asyncio.get_running_loop().time() > deadline:
            return {"code": resp.status_code, **resp.json()}
        await asyncio.sleep(0.2)


def test_health_names_a_silent_feed_and_status_counts_reconnects(shared_dir: Path, tmp_path: Path) -> None:
    played = real_bars(shared_dir, SIM_START + timedelta(hours=6))
    db_url = f"sqlite:///{tmp_path / 'barcast.db'}"
    seed_history(db_url, played, SIM_START)
    cfg_path = tmp_path / "barcast.toml"
    seen: dict[str, Any] = {}

    async def main() -> None:
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(played))], speed=60,
                                start=SIM_START.timestamp(), heartbeat_s=0.05)
        await sim.__aenter__()
        cfg_path.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url)
                            .replace("stall_timeout_s = 5.0", "stall_timeout_s = 1.0"))
        svc = Service(load_config(cfg_path, env={}), clock=sim.clock.now, notifier=Notifier(""))
        run = asyncio.create_task(svc.run())
        try:
            while not svc.ready:
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=svc.api.url) as client:  # type: ignore[union-attr]
                seen["before"] = await _poll(client, 200)
                await sim.__aexit__(None, None, None)  # the exchange goes away: refused from now on
                seen["after"] = await _poll(client, 503)
                seen["status"] = (await client.get("/status")).json()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "daemon", "status", "--api", svc.api.url,  # type: ignore[union-attr]
                    "--format", "json", env={**os.environ, "BARCAST_CONFIG": str(cfg_path)},
                    stdout=asyncio.subprocess.PIPE)
                out, _ = await proc.communicate()
                seen["cli"] = orjson.loads(out)
        finally:
            svc.stop_event.set()
            await asyncio.wait_for(run, 60)

    asyncio.run(main())
    assert seen["before"]["code"] == 200 and seen["before"]["ready"] is True, seen["before"]
    after = seen["after"]
    assert after["code"] == 503 and after["ready"] is False, after
    limit = FEED_SILENCE_FACTOR * 1.0
    assert any(r.startswith("feed binance: no message for") and f"(limit {limit:g} s)" in r
               for r in after["reasons"]), after
    feed = seen["status"]["feeds"]["binance"]
    # /status rounds the age to 0.1 s: just past the limit it can read as the limit itself
    assert feed["connected"] is False and feed["reconnects"] > 0 and feed["last_message_age_s"] >= limit
    assert seen["cli"]["source"] == "daemon"
    assert seen["cli"]["feeds"]["binance"]["reconnects"] > 0


def test_health_and_status_name_a_series_whose_symbol_the_exchange_refuses(shared_dir: Path, tmp_path: Path) -> None:
    """A configured symbol the exchange does not list (Binance: acknowledged, silent, REST
    answers "Invalid symbol."): /health is not ready naming the series and the exchange's
    reason, /status and `barcast status` show its feed as refused; the listed series goes on."""
    played = real_bars(shared_dir, SIM_START + timedelta(hours=6))
    db_url = f"sqlite:///{tmp_path / 'barcast.db'}"
    seed_history(db_url, played, SIM_START)
    cfg_path = tmp_path / "barcast.toml"
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(played))], speed=60,
                                     start=SIM_START.timestamp(), heartbeat_s=0.05) as sim:
            cfg_path.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url)
                                .replace('symbol = "BTC-USDT"\n', 'symbol = "BTC-USDT"\n[[series]]\n'
                                         'exchange = "binance"\nsymbol = "FOO-USDT"\n'))
            svc = Service(load_config(cfg_path, env={}), clock=sim.clock.now, notifier=Notifier(""))
            run = asyncio.create_task(svc.run())
            try:
                while not svc.ready:
                    await asyncio.sleep(0.05)
                async with httpx.AsyncClient(base_url=svc.api.url) as client:  # type: ignore[union-attr]
                    seen["health"] = await _poll(client, 503)
                    seen["status"] = (await client.get("/status")).json()
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "daemon", "status", "--api", svc.api.url,  # type: ignore[union-attr]
                        env={**os.environ, "BARCAST_CONFIG": str(cfg_path), "COLUMNS": "250"},
                        stdout=asyncio.subprocess.PIPE)
                    out, _ = await proc.communicate()
                    seen["table"] = out.decode()
            finally:
                svc.stop_event.set()
                await asyncio.wait_for(run, 60)

    asyncio.run(main())
    health = seen["health"]
    assert health["code"] == 503, health
    assert "series binance:FOO-USDT:5m: subscription refused by binance: Invalid symbol." in health["reasons"], health
    assert not [r for r in health["reasons"] if "BTC-USDT" in r], health
    rows = {r["series"]: r for r in seen["status"]["series"]}
    assert rows["binance:FOO-USDT:5m"]["feed"] == "refused: Invalid symbol."
    assert rows["binance:BTC-USDT:5m"]["feed"] == "connected"
    assert seen["status"]["feeds"]["binance"]["refused"] == {"binance:FOO-USDT:5m": "Invalid symbol."}
    assert "refused: Invalid symbol." in seen["table"]
