"""The whole service in-process against the exchange simulator on real Binance bars.

Restored window -> one forecast per bar -> stored and logged -> scored after 16 bars ->
scheduled retraining in a child process -> the API and control socket answer.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from daemon.config import load_config
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.live.control import request
from daemon.live.forecastlog import forecast_line
from daemon.live.notify import Notifier
from daemon.live.service import Service
from db import registry
from db.bars import read_bars
from db.engine import open_database
from db.forecasts import query_forecasts, stream_after
from tests.daemon.livehelp import SERIES, SIM_START, config_text, real_bars, seed_history

pytestmark = pytest.mark.slow

END = datetime(2020, 12, 21, 4, tzinfo=UTC)


def test_service_end_to_end(shared_dir: Path, tmp_path: Path) -> None:
    played = real_bars(shared_dir, END + timedelta(hours=2))  # the exchange plays on past END
    bars = [b for b in played if b.open_time < END]
    db_url = f"sqlite:///{tmp_path / 'barcast.db'}"
    history_end = datetime(2020, 12, 20, tzinfo=UTC)
    seed_history(db_url, played, history_end)
    sim_bars = tuple(played)
    seen: dict[str, object] = {}

    async def main() -> Service:
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", sim_bars)], speed=3000,
                                start=SIM_START.timestamp(), heartbeat_s=0.05)
        async with sim:
            cfg_path = tmp_path / "barcast.toml"
            cfg_path.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url,
                                            retrain="every_hours = 0.004\nholdout_bars = 48\nhistory_days = 3"))
            svc = Service(load_config(cfg_path, env={}), clock=sim.clock.now, notifier=Notifier(""))
            run = asyncio.create_task(svc.run())
            while not svc.ready:
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=svc.api.url) as client:  # type: ignore[union-attr]
                stream_lines: list[dict] = []
                stream_ids: list[int] = []

                async def read_stream() -> None:
                    async with client.stream("GET", "/forecasts/stream", timeout=60) as resp:
                        async for line in resp.aiter_lines():
                            if line.startswith("id:"):
                                stream_ids.append(int(line[3:]))
                            if line.startswith("data:"):
                                stream_lines.append(orjson.loads(line[5:]))
                                if len(stream_lines) >= 3:
                                    return

                reader = asyncio.create_task(read_stream())
                while svc.pipeline.series[SERIES].last_bar < END - timedelta(minutes=5):  # type: ignore[union-attr,operator]
                    await asyncio.sleep(0.1)
                await asyncio.wait_for(reader, 30)
                seen["stream"] = stream_lines
                seen["stream_ids"] = stream_ids
                seen["health"] = (await client.get("/health")).json()
                seen["status"] = (await client.get("/status")).json()
                seen["metrics"] = (await client.get("/metrics")).text
            seen["control"] = await request(svc.config.control_socket, {"cmd": "status"})
            seen["manual"] = await request(svc.config.control_socket,
                                           {"cmd": "retrain", "series": "binance:BTC-USDT", "wait": True}, timeout=120)
            seen["bad"] = await request(svc.config.control_socket, {"cmd": "retrain", "series": "kraken:XBT-USD"})
            # let at least one scheduled retrain finish (every 14.4 s)
            for _ in range(600):
                if any(r.outcome in ("promoted", "kept_champion") for r in svc.retrainer.history):  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.1)
            svc.stop_event.set()
            await asyncio.wait_for(run, 30)
            return svc

    svc = asyncio.run(main())
    db = open_database(db_url)
    stored = read_bars(db, SERIES, since=history_end, until=END)
    assert [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in stored] == [
        (b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in bars if b.open_time >= history_end
    ]
    forecasts = query_forecasts(db, SERIES, until=END)
    per_bar = Counter(f.issued_at for f in forecasts)
    assert max(per_bar.values()) == 1, "a bar was forecast twice"
    expected = {history_end - timedelta(minutes=5)} | {b.open_time for b in stored}
    assert set(per_bar) == expected, "every bar after the restored window has exactly one forecast"
    for f in forecasts:
        assert len(f.closes) == 16 and f.target_times[0] == f.issued_at + timedelta(minutes=5)
    # the forecast log has one line per forecast, the same ones
    lines = [orjson.loads(ln) for ln in (tmp_path / "data" / "logs" / "forecasts.jsonl").read_text().splitlines()]
    lines = [ln for ln in lines if ln["issued_at"] < END.isoformat().replace("+00:00", "Z")]
    assert sorted((ln["issued_at"], ln["model_id"]) for ln in lines) == sorted(
        (f.issued_at.isoformat().replace("+00:00", "Z"), f.model_id) for f in forecasts)
    # every forecast whose targets have all closed is scored, with the right error
    from sqlalchemy import text

    from db.scores import accuracy

    with db.engine.connect() as conn:
        scored = conn.execute(text("SELECT count(*) FROM forecast_scores")).scalar_one()
        sample = conn.execute(text(
            "SELECT f.predicted, s.actual, s.error, f.last_close, s.persistence_error FROM forecast_scores s "
            "JOIN forecasts f USING (exchange, symbol, interval, issued_at, model_id, step) LIMIT 50")).all()
    last_bar = stored[-1].open_time
    complete = [f for f in forecasts if f.target_times[-1] <= last_bar]
    assert scored >= 16 * len(complete) and complete
    for predicted, actual, error, last_close, perr in sample:
        assert error == pytest.approx(predicted - float(actual))
        assert perr == pytest.approx(float(last_close) - float(actual))
    acc = accuracy(db, series=SERIES)
    assert {a.step for a in acc} == set(range(1, 17))
    # every served fan is also scored against climatology of the stored bars: live probabilistic skill
    fans = [a for a in acc if a.n_quantile]
    assert fans and all(a.prob_skill is not None and -1 < a.prob_skill < 1 for a in fans)
    exposed = str(seen["metrics"])
    for gauge in ("barcast_live_pinball", "barcast_live_coverage", "barcast_live_prob_skill"):
        assert f'{gauge}{{model="persistence",series="{SERIES}",step="1"}}' in exposed, gauge
    # scheduled retraining ran in a child process and was judged
    runs = [r for r in svc.retrainer.history if r.outcome in ("promoted", "kept_champion")]  # type: ignore[union-attr]
    assert runs, [vars(r) for r in svc.retrainer.history]  # type: ignore[union-attr]
    # each run's model says what was decided; the newest promoted is champion, every other retired
    # (a later promotion retires an earlier champion)
    promoted = [r.model_id for r in runs if r.outcome == "promoted"]
    for r in runs:
        trained = registry.get_model(db, r.model_id)  # type: ignore[arg-type]
        assert trained.arch == "linear"
        assert trained.metrics["decision"]["promote"] is (r.outcome == "promoted")
        assert trained.status == ("champion" if promoted and r.model_id == promoted[-1] else "retired"), vars(r)
    # each forecast comes from exactly one model
    models_per_bar = Counter(f.issued_at for f in forecasts)
    assert set(models_per_bar.values()) == {1}
    # the API and control channel answered while it ran
    assert seen["health"]["ready"] is True  # type: ignore[index]
    assert "series" in seen["status"], seen["status"]  # type: ignore[operator]
    assert seen["status"]["series"][0]["series"] == str(SERIES)  # type: ignore[index]
    assert seen["control"]["ok"] is True  # type: ignore[index]
    assert seen["manual"]["ok"] is True and len(seen["manual"]["outcomes"]) == 1  # type: ignore[index]
    assert seen["bad"]["ok"] is False and "not served" in seen["bad"]["error"]  # type: ignore[index]
    assert len(seen["stream"]) >= 3 and seen["stream"][0]["series"] == str(SERIES)  # type: ignore[arg-type,index]
    # each event's id is its forecast's stored stream position, and resuming from the first gives the rest
    ids = seen["stream_ids"]
    assert isinstance(ids, list)
    assert len(ids) == len(seen["stream"]) and ids == sorted(set(ids))  # type: ignore[arg-type]
    resumed = stream_after(db, ids[0], limit=100_000).forecasts[: len(ids) - 1]
    assert [forecast_line(f) for f in resumed] == seen["stream"][1:]  # type: ignore[index]
    db.close()
    assert all(r.pid is not None and r.pid != os.getpid() for r in runs)  # trained in a child process
