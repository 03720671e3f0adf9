"""Champion / challenger on real training: a better model is promoted, a worse one is not.

The series is synthetic on purpose: a trend plus a 100-minute cycle, which a linear model on
log-returns forecasts far better than persistence, so the promotion path is exercised for sure
(on real 5-minute BTC bars persistence is hard to beat; the live end-to-end test shows that).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from db import registry
from db.bars import upsert_bars
from db.engine import Database
from db.records import Bar, SeriesKey
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.retrain_job import BASELINE_ID, RetrainRequest, ensure_baseline, run_retrain

if TYPE_CHECKING:
    from daemon.config import Config

pytestmark = pytest.mark.slow

S = SeriesKey("binance", "SYN-USDT")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def synthetic_bars(n: int) -> list[Bar]:
    out = []
    for i in range(n):
        p = Decimal(f"{100 * math.exp(0.0002 * i + 0.01 * math.sin(2 * math.pi * i / 20)):.4f}")
        out.append(Bar(S.exchange, S.symbol, S.interval, T0 + timedelta(minutes=5 * i), p, p, p, p, Decimal("1")))
    return out


def request(db_url: str, tmp_path: Path, **kw: object) -> RetrainRequest:
    base = dict(
        db_url=db_url, series=(str(S),), arch="linear", data=DataParams(window=32, horizon=16),
        model=ModelParams(units=4), train=TrainParams(epochs=2, batch_size=64, patience=1),
        history_days=30, holdout_bars=96, artifacts_dir=str(tmp_path / "models"), keep_artifacts=2,
    )
    base.update(kw)
    return RetrainRequest(**base)  # type: ignore[arg-type]


def test_better_challenger_promoted_worse_one_kept_out(any_db: Database, any_db_url: str, tmp_path: Path) -> None:
    upsert_bars(any_db, synthetic_bars(900))
    ensure_baseline(any_db, [S])
    assert registry.champion(any_db, S).id == BASELINE_ID  # type: ignore[union-attr]

    good = run_retrain(request(any_db_url, tmp_path))
    assert good.promoted, good.reason
    assert good.challenger is not None and good.persistence is not None and good.challenger < good.persistence / 2
    champ = registry.champion(any_db, S)
    assert champ is not None and champ.id == good.model_id and champ.status == "champion"
    assert registry.get_model(any_db, BASELINE_ID).status == "retired"
    from trainer.artifact_store import local_path

    assert local_path(any_db, good.artifact_path, tmp_path / "models").joinpath("manifest.json").is_file()

    # A challenger trained badly on purpose: raw scaled-price targets, one epoch at a crawl.
    bad = run_retrain(request(any_db_url, tmp_path, arch="gru",
                              data=DataParams(window=32, horizon=16, target="price"),
                              train=TrainParams(epochs=1, batch_size=64, learning_rate=1e-7, patience=0)))
    assert not bad.promoted
    assert bad.champion_id == good.model_id and bad.champion is not None
    assert "does not beat" in bad.reason or "coverage" in bad.reason  # a random fan fails the band first
    assert registry.champion(any_db, S).id == good.model_id  # type: ignore[union-attr]
    assert registry.get_model(any_db, bad.model_id).status == "retired"
    info = registry.get_model(any_db, bad.model_id)
    assert info.metrics["decision"]["promote"] is False
    history = [h[0] for h in registry.history(any_db, S)]
    assert history == [BASELINE_ID, good.model_id]


def test_a_winner_whose_daemon_lost_the_lease_is_not_promoted(tmp_db: Database, tmp_path: Path) -> None:
    """The challenger wins, but the series' lease moved to another daemon while it trained: the
    promotion re-checks the fencing token in its transaction and is refused; the champion stays."""
    from datetime import timedelta as td

    from db import cluster

    upsert_bars(tmp_db, synthetic_bars(900))
    ensure_baseline(tmp_db, [S])
    won = cluster.claim(tmp_db, "d1", [S], td(seconds=60))
    cluster.release(tmp_db, cluster.Fence("d1", won), [S])
    assert cluster.claim(tmp_db, "d2", [S], td(seconds=60)) == {S: won[S] + 1}
    url = f"sqlite:///{tmp_db.path}"
    stale = run_retrain(request(url, tmp_path, fence_owner="d1", fence_token=won[S]))
    assert not stale.promoted and "no longer held by d1" in stale.reason
    assert registry.champion(tmp_db, S).id == BASELINE_ID  # type: ignore[union-attr]
    assert registry.get_model(tmp_db, stale.model_id).status == "retired"
    # `barcast models show` says why it is retired (before: `promote: true` and the winning reason)
    decision = registry.get_model(tmp_db, stale.model_id).metrics["decision"]
    assert decision["promote"] is False and decision["reason"] == stale.reason and "beats" in decision["won"]
    owner = run_retrain(request(url, tmp_path, fence_owner="d2", fence_token=won[S] + 1))
    assert owner.promoted and registry.champion(tmp_db, S).id == owner.model_id  # type: ignore[union-attr]


def test_too_little_history_is_a_clear_error(tmp_db: Database, tmp_path: Path) -> None:
    from db.errors import InputError

    upsert_bars(tmp_db, synthetic_bars(100))
    url = f"sqlite:///{tmp_db.path}"
    with pytest.raises(InputError, match="retraining needs at least"):
        run_retrain(request(url, tmp_path))


def test_two_daemons_sharing_a_database_retrain_a_series_once(pg_db_url: str, tmp_path: Path) -> None:
    """Two retrainers (two daemons) on one PostgreSQL database race for the same series: the lease
    lets exactly one of them train (in a child process) and promote."""
    import asyncio
    import dataclasses

    from daemon.config import Config, RetrainConfig, SeriesConfig
    from daemon.live.retrainer import Retrainer
    from db.engine import open_database

    db = open_database(pg_db_url)
    upsert_bars(db, synthetic_bars(900))
    ensure_baseline(db, [S])
    config = Config(
        series=(SeriesConfig(S.exchange, S.symbol),),
        data=DataParams(window=32, horizon=16),
        retrain=RetrainConfig(holdout_bars=96, history_days=30),
    )
    config = dataclasses.replace(config, database=dataclasses.replace(config.database, url=pg_db_url),
                                 paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)),
                                 forecast=dataclasses.replace(config.forecast, arch="linear"))
    promoted: list[str] = []

    async def on_promoted(group: str, outcome: object) -> None:
        promoted.append(group)

    async def race() -> tuple[object, object]:
        a, b = Retrainer(config, db, on_promoted), Retrainer(config, db, on_promoted)
        b.owner = "other-host:1"
        return await asyncio.gather(a.retrain(str(S), reason="test"), b.retrain(str(S), reason="test"))

    outcomes = asyncio.run(race())
    done = [o for o in outcomes if not isinstance(o, str)]
    assert len(done) == 1 and promoted == [str(S)]
    assert [o for o in outcomes if isinstance(o, str)] == [f"{S}: a retrain is already queued or running"]
    assert [m.arch for m in registry.list_models(db) if m.arch == "linear"] == ["linear"]
    db.close()


def _standalone_config(tmp_path: Path, bars: int) -> Path:
    """A SQLite database holding `bars` synthetic bars of one series and a config for it (a small
    linear model, so `barcast retrain` trains in seconds)."""
    from db.engine import open_database

    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    db = open_database(db_url)
    upsert_bars(db, synthetic_bars(bars))
    db.close()
    cfg = tmp_path / "barcast.toml"
    cfg.write_text(f"""
[database]
url = "{db_url}"
[paths]
data_dir = "{tmp_path / 'data'}"
[[series]]
exchange = "binance"
symbol = "SYN-USDT"
[data]
window = 32
[forecast]
arch = "linear"
[retrain]
holdout_bars = 96
""")
    return cfg


def test_retrain_command_standalone_then_reload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`barcast retrain` with no daemon listening trains here (a child process) and promotes."""
    import json

    from tests.daemon.clirun import barcast

    cfg = _standalone_config(tmp_path, 900)
    res = barcast(capsys, "--config", str(cfg), "retrain", "--series", "binance:SYN-USDT", "--now")
    assert res.code == 0, res.err
    assert "no daemon listening" in res.err
    out = json.loads(res.out)
    assert out[0]["promoted"] is True and out[0]["pid"] != __import__("os").getpid()
    res = barcast(capsys, "--config", str(cfg), "retrain", "--series", "kraken:XBT-USD")
    assert res.code == 2 and "not in the config" in res.err
    res = barcast(capsys, "--config", str(cfg), "models", "list", "--format", "json")
    assert res.code == 0 and out[0]["model_id"] in res.out


def test_har_challenger_on_real_bars_is_judged_by_pinball(shared_dir: Path, tmp_db: Database, tmp_path: Path) -> None:
    """The volatility model trained by the live retraining job on 12 days of real BTC bars:
    judged on held-out bars by mean pinball against persistence's random-walk fan, with the
    coverage band; once promoted it serves a real fan through the model book."""
    import numpy as np
    import pandas as pd

    from daemon.live.inference import ServingModel
    from trainer.artifacts import load_artifact
    from trainer.datasets import read_csv_frame

    btc = SeriesKey("binance", "BTC-USDT")
    csv = shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv"
    frame = read_csv_frame(csv).loc["2021-02-01":"2021-02-12"]

    def bar(t: pd.Timestamp, r: pd.Series) -> Bar:
        o, h, lo, c, v = (Decimal(repr(float(r[k]))) for k in ("open", "high", "low", "close", "volume"))
        return Bar(btc.exchange, btc.symbol, btc.interval, t.to_pydatetime(), o, h, lo, c, v)

    upsert_bars(tmp_db, [bar(t, r) for t, r in frame.iterrows()])
    ensure_baseline(tmp_db, [btc])
    url = f"sqlite:///{tmp_path / 'barcast.db'}"
    out = run_retrain(request(url, tmp_path, series=(str(btc),), arch="har", data=DataParams(window=256, horizon=16),
                              holdout_bars=600))
    assert out.metric == "pinball" and out.challenger is not None and out.persistence is not None
    assert out.promoted == (out.challenger < out.persistence), out.reason
    model = load_artifact(out.artifact_path)
    assert model.arch == "har" and model.features == ("high", "low", "close", "volume")
    serving = ServingModel.of(out.model_id, model)
    window = frame[["open", "high", "low", "close", "volume"]].to_numpy()[-256:]
    cols = [["open", "high", "low", "close", "volume"].index(f) for f in model.features]
    last_open = int(frame.index[-1].timestamp())
    p = serving.model.predict_batch(window[None, :, cols], np.array([last_open]))
    assert p.quantiles.shape == (1, 16, 3) and np.all(np.diff(p.quantiles, axis=-1) > 0)
    assert np.all(p.point == window[-1, 3])


def _young_series(tmp_db: Database, tmp_path: Path, bars: list[Bar], *, backoff_minutes: float) -> Config:
    """The first 100 of `bars` stored (too few to train on) with persistence serving, and a config
    retraining a small linear model with failed jobs retried after `backoff_minutes`."""
    from daemon.config import Config, RetrainConfig, SeriesConfig

    upsert_bars(tmp_db, bars[:100])
    ensure_baseline(tmp_db, [S])
    config = Config(series=(SeriesConfig(S.exchange, S.symbol),), data=DataParams(window=32, horizon=16),
                    retrain=RetrainConfig(holdout_bars=96, history_days=30, retry_backoff_minutes=backoff_minutes))
    return dataclasses.replace(config, database=dataclasses.replace(config.database, url=f"sqlite:///{tmp_db.path}"),
                               paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)),
                               forecast=dataclasses.replace(config.forecast, arch="linear"))


def test_a_failed_first_model_is_retried_from_the_queue_with_backoff(tmp_db: Database, tmp_path: Path) -> None:
    """The first attempt fails (too little history yet); the job goes back to the queue with a
    backoff and the next attempt, once the bars are there, trains and promotes."""
    import asyncio

    from daemon.live.retrainer import Retrainer
    from db import jobs

    bars = synthetic_bars(900)
    config = _young_series(tmp_db, tmp_path, bars, backoff_minutes=0.005)
    promoted: list[str] = []

    async def on_promoted(group: str, outcome: object) -> None:
        promoted.append(group)

    async def main() -> tuple[object, list[jobs.TrainingJob], list[jobs.TrainingJob]]:
        r = Retrainer(config, tmp_db, on_promoted, poll_s=0.1)
        first = await r.retrain(str(S), reason="initial model")
        after_first = jobs.list_jobs(tmp_db)
        upsert_bars(tmp_db, bars[100:])
        for _ in range(1200):
            await r.dispatch()
            if jobs.list_jobs(tmp_db)[0].status in ("done", "failed") and not r.running:
                break
            await asyncio.sleep(0.1)
        await r.stop()
        return first, after_first, jobs.list_jobs(tmp_db)

    first, after_first, final = asyncio.run(main())
    # the requester is told why there is no outcome, and what happens next
    assert isinstance(first, str) and "failed (attempt 1 of 3, retried in 0.005 min)" in first
    assert "retraining needs at least" in first
    assert [(j.status, j.attempts) for j in after_first] == [("queued", 1)]
    assert "retraining needs at least" in (after_first[0].error or "")
    assert after_first[0].not_before > after_first[0].created_at  # backed off
    assert [(j.status, j.attempts, j.reason) for j in final] == [("done", 2, "initial model")]
    assert final[0].outcome is not None and final[0].outcome["promoted"] is True
    assert promoted == [str(S)]


def test_the_schedule_skips_a_group_still_short_of_history(tmp_db: Database, tmp_path: Path) -> None:
    """A scheduled retrain of a young series queued a job that could only fail: an ERROR and a
    retry with backoff at every tick, using up its attempts. It is skipped (counted) until the
    history is there, then queued as before."""
    import asyncio

    from daemon import metrics
    from daemon.live.retrainer import Retrainer
    from db import jobs

    bars = synthetic_bars(900)
    config = _young_series(tmp_db, tmp_path, bars, backoff_minutes=60)

    async def on_promoted(group: str, outcome: object) -> None:
        pass

    def skipped() -> float:
        return metrics.TRAINING_RUNS.labels(str(S), "skipped_history")._value.get()

    async def main() -> tuple[list[jobs.TrainingJob], list[jobs.TrainingJob]]:
        r = Retrainer(config, tmp_db, on_promoted, poll_s=0.1)
        await r.retrain_all()
        young = jobs.list_jobs(tmp_db)
        upsert_bars(tmp_db, bars[100:])
        await r.retrain_all()
        grown = jobs.list_jobs(tmp_db)
        await r.stop()
        return young, grown

    before = skipped()
    young, grown = asyncio.run(main())
    assert young == [] and skipped() == before + 1
    assert [(j.status, j.reason) for j in grown] == [("queued", "schedule")] and skipped() == before + 1


def test_artifacts_live_in_postgresql_so_another_machine_loads_them(pg_db_url: str, tmp_path: Path) -> None:
    """On PostgreSQL the champion's files are rows (bytes + sha256): a daemon with another, empty
    artifacts directory (another machine) serves it; a corrupted row is refused by name."""
    import asyncio
    import dataclasses
    import shutil

    from sqlalchemy import text

    from daemon.config import Config, SeriesConfig
    from daemon.live.forecastlog import ForecastLog
    from daemon.live.inference import ModelBook
    from daemon.live.pipeline import Pipeline
    from db.engine import open_database
    from db.errors import ArtifactError
    from trainer.artifact_store import local_path

    db = open_database(pg_db_url)
    upsert_bars(db, synthetic_bars(900))
    ensure_baseline(db, [S])
    out = run_retrain(request(pg_db_url, tmp_path / "trainer-host"))
    assert out.promoted and out.artifact_path == f"db:{out.model_id}"
    shutil.rmtree(tmp_path / "trainer-host")  # the training machine's directory is gone
    other = tmp_path / "other-host"
    config = Config(series=(SeriesConfig(S.exchange, S.symbol),), data=DataParams(window=32, horizon=16))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(other),
                                                                   artifacts_dir=str(other / "models")))

    async def serve() -> str:
        pipe = Pipeline(config, db, book=ModelBook(), forecast_log=ForecastLog(other / "f.jsonl"))
        try:
            return (await pipe.install(config.model_group(S))).model_id
        finally:
            pipe.close()

    assert asyncio.run(serve()) == out.model_id
    assert (other / "models" / out.model_id / "manifest.json").is_file()
    with db.begin() as conn:
        conn.execute(text("UPDATE model_artifacts SET data = data || '\\x00'::bytea WHERE name = 'manifest.json'"))
    with pytest.raises(ArtifactError, match=f"model {out.model_id}: stored file manifest.json does not match"):
        local_path(db, out.artifact_path, tmp_path / "third-host")
    db.close()


def test_an_operators_retrain_runs_a_job_waiting_out_its_backoff(tmp_db: Database, tmp_path: Path) -> None:
    """A failed attempt waits an hour to be retried; `barcast retrain` meanwhile (hurry) makes the
    queued job due now and waits for it. Before, the request was dropped ("already queued"),
    the daemon answered "started" and nothing ran for the hour."""
    import asyncio

    from daemon.live.retrainer import Retrainer
    from db import jobs
    from trainer.retrain_job import RetrainOutcome

    bars = synthetic_bars(900)
    config = _young_series(tmp_db, tmp_path, bars, backoff_minutes=60)

    async def on_promoted(group: str, outcome: object) -> None:
        return None

    async def main() -> tuple[object, object, object]:
        r = Retrainer(config, tmp_db, on_promoted, poll_s=0.1)
        first = await r.retrain(str(S), reason="initial model")
        upsert_bars(tmp_db, bars[100:])
        unhurried = await r.retrain(str(S), reason="schedule")
        second = await r.retrain(str(S), reason="manual", hurry=True)
        await r.stop()
        return first, unhurried, second

    first, unhurried, second = asyncio.run(main())
    assert isinstance(first, str) and "retried in 60 min" in first
    assert unhurried == f"{S}: a retrain is already queued or running"
    assert isinstance(second, RetrainOutcome) and second.promoted, second
    assert [(j.status, j.attempts, j.reason) for j in jobs.list_jobs(tmp_db)] == [("done", 2, "initial model")]


def test_retrain_command_says_why_a_run_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`barcast retrain --now` whose run fails (too little history) exits 1 naming the reason and
    the retry, on stdout (JSON) and stderr; before, it printed `[null]`."""
    import json

    from tests.daemon.clirun import barcast

    cfg = _standalone_config(tmp_path, 100)
    res = barcast(capsys, "--config", str(cfg), "retrain", "--series", "binance:SYN-USDT", "--now", "--standalone")
    assert res.code == 1, res.err
    [out] = json.loads(res.out)
    assert "retraining needs at least" in out["error"] and "retried in 5 min" in out["error"]
    assert "retrain failed: binance:SYN-USDT:5m: training job 1 failed (attempt 1 of 3" in res.err


def test_retrain_answer_over_the_control_socket() -> None:
    """What the daemon answers a waited-for retrain: not ok, with each group's reason, when a run
    has no outcome (before: `{"ok": true, "outcomes": [null]}` for a crashed child)."""
    from daemon.live.retrainer import retrain_answer

    bad = retrain_answer(["g: training job 6 failed (attempt 1 of 3, retried in 5 min): training process died"])
    assert bad == {"ok": False, "outcomes": [{"error": bad["error"]}],
                   "error": "g: training job 6 failed (attempt 1 of 3, retried in 5 min): training process died"}
    assert retrain_answer([]) == {"ok": True, "outcomes": []}


def test_a_waiting_retrain_whose_job_another_process_ran_gets_its_outcome(tmp_db: Database, tmp_path: Path) -> None:
    """`barcast retrain --standalone` beside a daemon on one database: the daemon claims the job
    the command queued (here the command's slot is taken, so the daemon surely claims it). The
    command reads the outcome from the queue; before, it waited for ever on a job it did not run."""
    import asyncio
    import dataclasses
    from datetime import timedelta as td

    from daemon.config import Config, RetrainConfig, SeriesConfig
    from daemon.live.retrainer import Retrainer
    from db import jobs
    from trainer.retrain_job import RetrainOutcome

    other, third = SeriesKey("binance", "OTH-USDT"), SeriesKey("binance", "THR-USDT")
    upsert_bars(tmp_db, synthetic_bars(900))
    ensure_baseline(tmp_db, [S])
    config = Config(series=tuple(SeriesConfig(k.exchange, k.symbol) for k in (S, other, third)),
                    data=DataParams(window=32, horizon=16),
                    retrain=RetrainConfig(holdout_bars=96, history_days=30, max_concurrent=1))
    config = dataclasses.replace(config, database=dataclasses.replace(config.database, url=f"sqlite:///{tmp_db.path}"),
                                 paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)),
                                 forecast=dataclasses.replace(config.forecast, arch="linear"))

    async def on_promoted(group: str, outcome: object) -> None:
        return None

    async def main() -> tuple[object, list[jobs.TrainingJob]]:
        daemon, command = Retrainer(config, tmp_db, on_promoted, poll_s=0.1), Retrainer(config, tmp_db, on_promoted,
                                                                                          poll_s=0.1)
        daemon.owner, command.owner = "daemon:1", "command:2"
        slots: dict[str, int] = {}
        for key, who in ((other, daemon.owner), (third, command.owner)):  # each one's only slot taken
            slot = jobs.enqueue(tmp_db, str(key), str(key), "schedule")
            assert slot is not None
            slots[who] = slot
            assert [j.id for j in jobs.claim(tmp_db, who, series={str(key)}, per_daemon=1, global_cap=0,
                                             lease=td(minutes=5))] == [slots[who]]
        waiting = asyncio.create_task(command.retrain(str(S), reason="manual (standalone)", hurry=True))
        while not any(j.group == str(S) for j in jobs.list_jobs(tmp_db)):
            await asyncio.sleep(0.05)
        jobs.finish(tmp_db, slots[daemon.owner], daemon.owner, {})  # the daemon's slot is free: it claims it
        while not await daemon.dispatch():
            await asyncio.sleep(0.05)
        result = await asyncio.wait_for(waiting, 300)  # a guard against the old hang, not a timing
        await daemon.stop()
        await command.stop()
        return result, jobs.list_jobs(tmp_db)

    result, final = asyncio.run(main())
    assert isinstance(result, RetrainOutcome) and result.promoted, result
    mine = [j for j in final if j.group == str(S)]
    assert [(j.status, j.claimed_by) for j in mine] == [("done", "daemon:1")]


def test_standalone_retrain_of_one_series_leaves_other_groups_jobs_alone(tmp_db: Database, tmp_path: Path) -> None:
    """`barcast retrain --standalone --series A` claims only A's job: another group's due job
    (the daemon's, say) stays queued for its daemon. Before, the command claimed it too (the
    oldest due job first), trained it, and would abandon it, still `running`, when it exited."""
    import asyncio
    import dataclasses

    from daemon.config import Config, RetrainConfig, SeriesConfig
    from daemon.runner import retrain_standalone
    from db import jobs
    from trainer.retrain_job import RetrainOutcome

    other = SeriesKey("binance", "OTH-USDT")
    upsert_bars(tmp_db, synthetic_bars(900))
    config = Config(series=tuple(SeriesConfig(k.exchange, k.symbol) for k in (S, other)),
                    data=DataParams(window=32, horizon=16), retrain=RetrainConfig(holdout_bars=96, history_days=30))
    config = dataclasses.replace(config, database=dataclasses.replace(config.database, url=f"sqlite:///{tmp_db.path}"),
                                 paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)),
                                 forecast=dataclasses.replace(config.forecast, arch="linear"))
    theirs = jobs.enqueue(tmp_db, str(other), str(other), "schedule")
    assert theirs is not None
    [result] = asyncio.run(retrain_standalone(config, tmp_db, S))
    assert isinstance(result, RetrainOutcome) and result.promoted, result
    left = {j.id: (j.group, j.status, j.attempts) for j in jobs.list_jobs(tmp_db)}
    assert left[theirs] == (str(other), "queued", 0)
    assert sorted(v for k, v in left.items() if k != theirs) == [(str(S), "done", 1)]


def test_a_daemon_asked_to_retrain_a_group_another_daemon_owns_says_so(tmp_db: Database) -> None:
    """Daemons sharing a database: a retrain asked of one that does not own the group's first
    series is not run there, and the control answer says so (not ok, the reason) for both
    `barcast retrain` and `--now`; before, the first was answered `"started"`."""
    import asyncio

    from daemon.config import Config, SeriesConfig
    from daemon.live.retrainer import Retrainer
    from daemon.live.service import Service
    from db.cluster import Fence

    config = Config(series=(SeriesConfig(S.exchange, S.symbol),))
    svc = Service(config)

    async def on_promoted(group: str, outcome: object) -> None:
        return None

    svc.retrainer = Retrainer(config, tmp_db, on_promoted, fence=lambda: Fence("d1", {}))  # owns no series
    why = f"{S}: another daemon owns the group's first series and retrains it"
    for wait in (False, True):
        answer = asyncio.run(svc._control({"cmd": "retrain", "series": str(S), "wait": wait}))
        assert answer["ok"] is False and answer["error"] == why, answer
