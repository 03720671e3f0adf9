"""Pure and small I/O parts of the live service: window, forecast log, sd_notify, scoring, control."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.live.broadcast import Broadcast
from daemon.live.control import ControlServer, request
from daemon.live.forecastlog import ForecastLog
from daemon.live.inference import Job, ModelBook, ServingModel, forecast_batch
from daemon.live.notify import Notifier
from daemon.live.scoring import DriftWatch, score
from daemon.live.window import RollingWindow
from db.engine import Database
from db.records import Bar, Forecast, SeriesKey, iso
from db.scores import Unscored
from trainer.forecaster import Forecaster
from trainer.params import DataParams, ModelParams
from trainer.quantiles import Prediction

S = SeriesKey("binance", "BTC-USDT")
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def bar(i: int, close: float | None = None) -> Bar:
    c = D(str(close if close is not None else 100 + i))
    return Bar("binance", "BTC-USDT", "5m", T0 + timedelta(minutes=5 * i), c, c + 1, c - 1, c, D("1.5"), 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=80), st.integers(0, 3))
def test_window_holds_newest_contiguous_bars(indices: list[int], fill: int) -> None:
    """Against a direct reference: the window is the longest gap-free (after filling) tail."""
    w = RollingWindow(8, "5m", fill_gaps=fill)
    seen: dict[int, float] = {}
    newest = -1
    for i in indices:
        w.push(bar(i))
        if i > newest:
            # reference: gap of missing bars longer than fill breaks the run
            if newest >= 0 and i - newest - 1 > fill:
                seen = {}
            elif newest >= 0:
                for k in range(newest + 1, i):
                    seen[k] = seen[newest]
            seen[i] = 100 + i
            newest = i
        elif i in seen and i >= newest - 7:
            seen[i] = 100 + i
    tail = [seen[k] for k in sorted(seen) if k > newest - 8]
    assert len(w) == len(tail)
    if w.ready:
        assert list(w.values()[:, 3]) == tail
        assert w.last_time == T0 + timedelta(minutes=5 * newest)


def test_window_values_are_a_snapshot() -> None:
    w = RollingWindow(3, "5m")
    for i in range(3):
        w.push(bar(i))
    snap = w.values()
    w.push(bar(3))
    assert list(snap[:, 3]) == [100, 101, 102]
    assert list(w.values()[:, 3]) == [101, 102, 103]


def _fc(i: int) -> Forecast:
    issued = T0 + timedelta(minutes=5 * i)
    return Forecast(S, issued, "m", tuple(issued + timedelta(minutes=5 * k) for k in range(1, 17)),
                    tuple(float(i + k) for k in range(16)), last_close=D("100.10"), latency_ms=1.5)


def test_forecast_log_rotates_without_losing_lines(tmp_path: Path) -> None:
    path = tmp_path / "forecasts.jsonl"
    flog = ForecastLog(path, max_bytes=3000, backups=50)
    for i in range(40):
        flog.write([_fc(i)])
    flog.close()
    files = sorted(tmp_path.glob("forecasts.jsonl*"))
    assert len(files) > 3
    lines = [ln for f in files for ln in f.read_text().splitlines()]
    issued = sorted(orjson.loads(ln)["issued_at"] for ln in lines)
    assert issued == sorted((T0 + timedelta(minutes=5 * i)).isoformat().replace("+00:00", "Z") for i in range(40))
    first = orjson.loads(lines[0])
    assert first["last_close"] == "100.10" and len(first["targets"]) == 16 and first["series"] == str(S)
    assert all(f.stat().st_size <= 3000 for f in files)


def test_forecast_log_keeps_only_backups(tmp_path: Path) -> None:
    flog = ForecastLog(tmp_path / "f.jsonl", max_bytes=1000, backups=2)
    for i in range(30):
        flog.write([_fc(i)])
    flog.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.jsonl", "f.jsonl.1", "f.jsonl.2"]


def test_sd_notify_messages_arrive_on_a_real_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    n = Notifier(str(path))
    assert n.ready("serving 1 series")
    assert n.watchdog()
    assert n.extend_timeout(90)
    got = [server.recv(4096).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=serving 1 series", "WATCHDOG=1", "EXTEND_TIMEOUT_USEC=90000000"]
    n.close()
    server.close()
    assert not Notifier("").ready("x")  # outside systemd: a no-op


def test_scoring_and_drift() -> None:
    rows = [Unscored(S, T0, "m", k, T0 + timedelta(minutes=5 * k), 101.0, D("100"), D("100.5")) for k in (1, 2)]
    scores = score(rows, T0)
    assert [s.error for s in scores] == [0.5, 0.5] and [s.persistence_error for s in scores] == [-0.5, -0.5]
    watch = DriftWatch(window=10, margin=0.1, period=2)
    watch.add(scores)
    assert watch.check() is False  # 0.5 vs 0.5: not above by 10 %
    bad = [Unscored(S, T0, "m", 3, T0, 110.0, D("100"), D("100"))]
    watch.add(score(bad, T0))
    assert watch.check() is False and watch.check() is True  # needs two checks in a row
    assert watch.mae is not None and watch.mae > watch.persistence_mae  # type: ignore[operator]


class _Doubler(Forecaster):
    """A stand-in model (close only, window 4, horizon 3) whose `predict_batch` doubles the last
    close, counting its calls. Its quantiles come out crossed (q90 below q10) so the serving side
    must sort them."""

    def __init__(self) -> None:
        super().__init__("double", ModelParams(quantiles=(0.1, 0.5, 0.9)), DataParams(window=4, horizon=3))
        self.calls = 0
        self.times: list[np.ndarray] = []

    def predict_batch(self, x: np.ndarray, times: np.ndarray | None = None) -> Prediction:
        self.calls += 1
        assert times is not None
        self.times.append(times)
        point = np.repeat(x[:, -1:, 0] * 2, self.horizon, axis=1)
        q = np.stack([point + 1.0, point, point - 1.0], axis=-1)  # crossed on purpose
        return Prediction(point, q, (0.1, 0.5, 0.9))

    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        raise AssertionError("predict_batch is the stand-in's own")


def test_forecast_batch_runs_one_call_per_model_and_swap_is_atomic() -> None:
    book = ModelBook()
    m = _Doubler()
    book.swap("g", ServingModel.of("double", m))
    serving = book.get("g")
    assert serving is not None
    jobs = []
    for i, key in enumerate([S, SeriesKey("coinbase", "BTC-USD")]):
        win = np.zeros((6, 6))
        win[:, 3] = np.arange(6) + 10 * i
        jobs.append(Job(key, serving, win, T0, D("1"), 0.0))
    out = forecast_batch(jobs, lambda k: k.step)
    assert m.calls == 1
    assert [f.closes for f in out] == [(10.0, 10.0, 10.0), (30.0, 30.0, 30.0)]
    assert m.times[0].tolist() == [int(T0.timestamp())] * 2  # issued_at as Unix seconds
    assert out[0].levels == (0.1, 0.5, 0.9) and out[0].quantiles == ((9.0, 10.0, 11.0),) * 3  # sorted
    assert out[0].target_times[0] == T0 + timedelta(minutes=5) and out[0].model_id == "double"
    old = book.swap("g", ServingModel.of("other", _Doubler()))
    assert old is serving and book.get("g").model_id == "other"  # type: ignore[union-attr]


def test_broadcast_drops_oldest_for_slow_subscriber() -> None:
    async def main() -> list[int]:
        b = Broadcast(maxsize=2)
        it = b.subscribe()
        first = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)
        for i in range(5):
            b.publish(i + 1, {"i": i})
        got = [(await first)[1]["i"]]
        got.append((await it.__anext__())[1]["i"])
        await it.aclose()
        assert b.dropped >= 1
        return got

    got = asyncio.run(main())
    assert got[-1] == 4


def test_a_subscription_remembers_the_lowest_position_it_lost() -> None:
    """A full queue drops its oldest item; the subscription keeps the lowest position dropped since
    the reader last asked (the stream refills after it from the database), per subscriber."""

    async def main() -> None:
        b = Broadcast(maxsize=3)
        slow, fast = b.subscribe(), b.subscribe()

        def publish(*seqs: int) -> None:
            for seq in seqs:
                b.publish(seq, {"seq": seq})
                fast.queue.get_nowait()  # a reader that keeps up

        publish(1, 2, 3)
        assert slow.take_lost() is None and slow.dropped == 0
        publish(4, 5)
        assert slow.take_lost() == 1 and slow.take_lost() is None  # asked once, then forgotten
        publish(6, 7)  # drops 3 and 4
        assert slow.take_lost() == 3
        assert [await slow.__anext__() for _ in range(2)] == [(5, {"seq": 5}), (6, {"seq": 6})]
        publish(8, 9, 10)  # 7 is dropped; what is queued is newer than it
        assert slow.take_lost() == 7
        assert [slow.queue.get_nowait()[0] for _ in range(3)] == [8, 9, 10]
        assert slow.dropped == 5 and b.dropped == 5 and fast.take_lost() is None and fast.dropped == 0
        await slow.aclose()
        publish(11, 12, 13, 14)
        assert slow.take_lost() is None and slow.queue.empty()  # a closed subscription gets nothing

    asyncio.run(main())


def test_control_socket_round_trip_and_single_instance(tmp_path: Path) -> None:
    path = tmp_path / "barcast.sock"

    async def handler(req: dict) -> dict:
        return {"ok": True, "echo": req["cmd"]}

    async def main() -> None:
        server = ControlServer(path, handler)
        await server.start()
        assert (path.stat().st_mode & 0o777) == 0o600
        assert await request(path, {"cmd": "status"}) == {"ok": True, "echo": "status"}
        with pytest.raises(Exception, match="already running"):
            await ControlServer(path, handler).start()
        await server.stop()
        assert not path.exists()
        with pytest.raises(ConnectionError):
            await request(path, {"cmd": "status"})

    asyncio.run(main())


def test_a_data_directory_too_deep_for_a_unix_socket_still_gets_a_control_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`barcast run` (and the demo) under a deep data directory exited with "AF_UNIX path too
    long": a socket path may have 107 bytes. The default socket is then a short one in a private
    per-user directory, the same for daemon and CLI; a too-long configured one is a config error
    naming the key."""
    import dataclasses
    import shutil
    import tempfile

    from daemon.config import UNIX_SOCKET_PATH_MAX, Config, ServiceConfig, socket_path

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    run = Path(tempfile.mkdtemp(prefix="run-", dir="/tmp"))  # a short runtime directory
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = Config()
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(deep)))
    path = config.control_socket
    assert len(str(deep / "barcast.sock")) > UNIX_SOCKET_PATH_MAX >= len(str(path))
    assert path == socket_path(deep / "barcast.sock") and path.parent.parent == run
    other = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(deep / "x")))
    assert other.control_socket != path  # one per data directory

    async def handler(req: dict) -> dict:
        return {"ok": True, "echo": req["cmd"]}

    async def main() -> None:
        server = ControlServer(path, handler)
        await server.start()
        assert (path.parent.stat().st_mode & 0o777) == 0o700
        assert await request(config.control_socket, {"cmd": "status"}) == {"ok": True, "echo": "status"}
        await server.stop()

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(run)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))  # itself too deep: the temp directory then
    assert len(str(socket_path(deep / "barcast.sock"))) <= UNIX_SOCKET_PATH_MAX
    with pytest.raises(ValueError, match=r"control_socket: .* longer than the 107 a Unix socket path may have"):
        ServiceConfig(control_socket=str(deep / "barcast.sock"))


def test_a_daemon_that_closes_without_answering_is_not_taken_for_no_daemon(tmp_path: Path) -> None:
    """A daemon that took a request and went away (stopped during `barcast retrain --now`) is an
    error, not ConnectionError: the command took that for "no daemon listening" and trained
    standalone a second time."""
    from db.errors import BarcastError

    path = tmp_path / "barcast.sock"

    async def gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    async def main() -> BaseException:
        server = await asyncio.start_unix_server(gone, path=str(path))
        try:
            await request(path, {"cmd": "retrain", "wait": True})
        except BaseException as exc:
            return exc
        finally:
            server.close()
        raise AssertionError("answered")

    exc = asyncio.run(main())
    assert isinstance(exc, BarcastError) and not isinstance(exc, ConnectionError), exc
    assert "closed the control connection without answering" in str(exc)


def test_a_control_request_that_fails_is_answered_with_the_error(tmp_path: Path) -> None:
    """A handler failing with something other than a BarcastError (the database away during a
    retrain request) answers the caller with the error; it closed the connection unanswered."""
    path = tmp_path / "barcast.sock"

    async def handler(req: dict) -> dict:
        raise RuntimeError("database is locked")

    async def main() -> dict:
        server = ControlServer(path, handler)
        await server.start()
        try:
            return await request(path, {"cmd": "retrain", "wait": True})
        finally:
            await server.stop()

    assert asyncio.run(main()) == {"ok": False, "error": "RuntimeError: database is locked"}


def test_unusable_champion_artifact_does_not_stop_forecasting(tmp_db: Database, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A champion whose artifact is corrupt: the service serves persistence and says why."""
    import dataclasses

    from daemon.config import Config, SeriesConfig
    from daemon.live.pipeline import Pipeline
    from db import registry
    from db.records import ModelInfo

    art = tmp_path / "models" / "lstm-broken"
    art.mkdir(parents=True)
    (art / "manifest.json").write_text("{not json")
    registry.register_model(tmp_db, ModelInfo("lstm-broken", "lstm", (S,), None, None, {}, {}, str(art)))
    registry.promote(tmp_db, "lstm-broken", S)
    config = Config(series=(SeriesConfig(S.exchange, S.symbol),))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))

    async def main() -> str:
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        try:
            served = await pipe.install(config.model_group(S))
            return served.model_id
        finally:
            pipe.close()

    assert asyncio.run(main()) == "persistence"
    flagged = [r for r in caplog.records if "artifact unusable" in r.getMessage()]
    assert flagged and "lstm-broken" in flagged[0].error  # type: ignore[attr-defined]


def test_series_closing_at_one_boundary_share_one_batch(tmp_db: Database, tmp_path: Path) -> None:
    """Two series, one model group each: bars closing at the same boundary go through one batch
    (one trip to the inference thread), each forecast stored and logged once."""
    import dataclasses

    from daemon.config import Config, SeriesConfig
    from daemon.live.pipeline import Pipeline
    from db.bars import upsert_bars
    from trainer.params import DataParams

    eth = SeriesKey("binance", "ETH-USDT")
    config = Config(series=(SeriesConfig(S.exchange, S.symbol), SeriesConfig(eth.exchange, eth.symbol)),
                    data=DataParams(window=8))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))

    def eth_bar(i: int) -> Bar:
        b = bar(i, 2000 + i)
        return dataclasses.replace(b, symbol="ETH-USDT")

    history = [bar(i) for i in range(8)] + [eth_bar(i) for i in range(8)]
    upsert_bars(tmp_db, history)

    async def main() -> tuple[int, int]:
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        await asyncio.to_thread(pipe.restore)
        for key in config.series_keys:
            await pipe.install(config.model_group(key))
        pipe.start()
        for i in range(8, 12):
            new = [bar(i), eth_bar(i)]
            upsert_bars(tmp_db, new)
            for b in new:
                await pipe.on_bar(b)
        await pipe.drain()
        pipe.close()
        return pipe.stats.batches, pipe.stats.forecasts

    batches, forecasts = asyncio.run(main())
    assert (batches, forecasts) == (4, 8)
    from db.forecasts import query_forecasts

    stored = query_forecasts(tmp_db)
    assert len(stored) == 8 and {f.series for f in stored} == {S, eth}
    eth_latest = next(f for f in stored if f.series == eth)
    assert eth_latest.closes[0] == 2011.0 and eth_latest.model_id == "persistence"
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 8


def test_quantile_steps_are_scored_and_move_the_calibration_stored_with_them(tmp_db: Database) -> None:
    """Pinball per level, the central-interval flag and width; the calibrator moves only once the
    scores and its state are stored together, and a new book loads exactly that state."""
    from daemon.live.calibration import CalibrationBook
    from db.calibration import load_states
    from db.forecasts import insert_forecasts
    from db.scores import accuracy, insert_scores, unscored_steps

    levels = (0.1, 0.5, 0.9)
    f = Forecast(S, T0, "m", (T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)), (100.0, 100.0),
                 last_close=D("100"), levels=levels, quantiles=((98.0, 100.0, 102.0), (97.0, 100.0, 103.0)))
    insert_forecasts(tmp_db, [f])
    from db.bars import upsert_bars

    upsert_bars(tmp_db, [bar(1, 103.0), bar(2, 99.0)])
    rows = unscored_steps(tmp_db, S)
    assert [(r.step, r.quantiles) for r in rows] == [(1, (98.0, 100.0, 102.0)), (2, (97.0, 100.0, 103.0))]
    s1, s2 = score(rows, T0)
    # actual 103 above every quantile: loss tau * (y - q); outside the 98..102 interval
    assert s1.pinball == pytest.approx((0.1 * 5, 0.5 * 3, 0.9 * 1)) and s1.inside is False and s1.width == 4.0
    # actual 99: below q50 and q90 -> (1 - tau)(q - y); inside 97..103
    assert s2.pinball == pytest.approx((0.1 * 2, 0.5 * 1, 0.1 * 4)) and s2.inside is True and s2.width == 6.0
    book = CalibrationBook(horizon=2, gamma=0.01)
    moved = book.updated(rows)
    assert book.get(S, "m") is None  # nothing committed yet
    cal = moved[(S, "m")]
    # step 1: every level hit 0 times (actual above all): theta += gamma/1 * tau
    assert cal.theta[0].tolist() == pytest.approx([0.001, 0.005, 0.009])
    # step 2: actual 99 <= q50, q90 -> theta += gamma/2 * (tau - hit)
    assert cal.theta[1].tolist() == pytest.approx([0.0005, -0.0025, -0.0005])
    insert_scores(tmp_db, [s1, s2], book.states(moved, T0))
    book.commit(moved)
    acc = {a.step: a for a in accuracy(tmp_db, series=S)}
    assert acc[1].coverage == 0.0 and acc[2].coverage == 1.0 and acc[2].width == 6.0
    assert acc[1].pinball == pytest.approx({0.1: 0.5, 0.5: 1.5, 0.9: 0.9})
    assert acc[1].pinball_mean == pytest.approx((0.5 + 1.5 + 0.9) / 3) and acc[1].n_quantile == 1
    again = CalibrationBook(horizon=2, gamma=0.01)
    assert again.load(load_states(tmp_db, [S])) == 1
    assert again.get(S, "m").theta.tolist() == cal.theta.tolist()  # type: ignore[union-attr]
    served = again.apply(S, "m", levels, np.array([100.0]), np.array([[[98.0, 100.0, 102.0], [97.0, 100.0, 103.0]]]))
    assert served[0, 0, 2] > 102.0 and np.all(np.diff(served, axis=-1) >= 0)  # q90 moved out after a miss


def test_a_boundary_waits_only_for_series_closing_there(tmp_db: Database, tmp_path: Path) -> None:
    """1m and 5m series side by side: a 1m boundary where no 5m bar ends goes out as soon as the
    1m series have asked (it used to wait out the coalescing timer for the 5m series, every bar);
    where the 5m bar ends too, all three share one batch. The timer is 10 minutes here, so a
    batch that waits for it is never sent while the test looks."""
    import dataclasses

    from daemon.config import Config, ForecastConfig, SeriesConfig
    from daemon.live.pipeline import Pipeline
    from db.bars import upsert_bars
    from trainer.params import DataParams

    btc, eth, slow = SeriesKey("binance", "BTC-USDT", "1m"), SeriesKey("binance", "ETH-USDT", "1m"), \
        SeriesKey("binance", "BTC-USDT", "5m")
    config = Config(series=tuple(SeriesConfig(k.exchange, k.symbol, k.interval) for k in (btc, eth, slow)),
                    data=DataParams(window=8), forecast=ForecastConfig(coalesce_ms=600_000))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))
    noon = datetime(2021, 1, 1, 12, tzinfo=UTC)

    def at(key: SeriesKey, t: datetime, close: int) -> Bar:
        c = D(close)
        return Bar(key.exchange, key.symbol, key.interval, t, c, c + 1, c - 1, c, D("1.5"), 3)

    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    upsert_bars(tmp_db, [at(k, noon + minutes(i), 100 + i) for k in (btc, eth) for i in range(8)]  # 12:00-12:07
                + [at(slow, noon - minutes(40 - 5 * i), 100 + i) for i in range(9)])  # 11:20-12:00

    async def main() -> list[tuple[int, int]]:
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        await asyncio.to_thread(pipe.restore)
        for key in config.series_keys:
            await pipe.install(config.model_group(key))
        pipe.start()
        seen = []
        for new in ([at(btc, noon + minutes(8), 108), at(eth, noon + minutes(8), 108)],  # end 12:09
                    [at(btc, noon + minutes(9), 109), at(eth, noon + minutes(9), 109),  # end 12:10
                     at(slow, noon + minutes(5), 109)]):
            upsert_bars(tmp_db, new)
            for b in new:
                await pipe.on_bar(b)
            await pipe.idle()  # every batch sent so far is forecast and stored
            seen.append((pipe.stats.batches, pipe.stats.forecasts))
        await pipe.drain()
        pipe.close()
        return seen

    assert asyncio.run(main()) == [(1, 2), (2, 5)]


def test_models_that_stopped_serving_leave_the_live_gauges_and_drift_watches(tmp_db: Database,
                                                                              tmp_path: Path) -> None:
    """A long-running daemon serves model after model (a promotion a day). Each used to keep its
    live MAE/pinball/coverage gauges and its drift flag and watch forever, frozen at their last
    values (a retired model flagged drifting stayed flagged): /metrics and memory grew with every
    promotion. Now they go once the model's scores leave the scoring window (here 4 bars), so
    after 8 models in turn only the ones scored within the window are left."""
    import dataclasses

    from daemon import metrics
    from daemon.config import Config, ScoringConfig, SeriesConfig
    from daemon.live.pipeline import Pipeline
    from db.bars import upsert_bars
    from trainer.params import DataParams

    key = SeriesKey("binance", "SOAK-USDT")  # a series of its own: the gauges are process-wide
    config = Config(series=(SeriesConfig(key.exchange, key.symbol),), data=DataParams(window=8, horizon=4),
                    scoring=ScoringConfig(window_steps=16))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))

    def b(i: int) -> Bar:
        return dataclasses.replace(bar(i, 100 + (i % 7)), symbol=key.symbol)

    upsert_bars(tmp_db, [b(i) for i in range(8)])

    def labelled(gauge: object) -> set[str]:
        return {s.labels["model"] for m in gauge.collect() for s in m.samples  # type: ignore[attr-defined]
                if s.labels["series"] == str(key)}

    async def main() -> tuple[set[str], set[str], set[str], int]:
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        await asyncio.to_thread(pipe.restore)
        served = await pipe.install(config.model_group(key))
        pipe.start()
        i = 8
        for n in range(8):  # 8 models in turn, 6 bars each
            pipe.book.swap(config.model_group(key), ServingModel.of(f"model-{n}", served.model))
            for _ in range(6):
                upsert_bars(tmp_db, [b(i)])
                await pipe.on_bar(b(i))
                await pipe.idle()
                i += 1
        await pipe.drain()
        pipe.close()
        return labelled(metrics.LIVE_MAE), labelled(metrics.LIVE_PINBALL), labelled(metrics.DRIFT_FLAG), \
            len(pipe.scorer.drift)

    mae, pinball, drift, watches = asyncio.run(main())
    assert mae == pinball == drift == {"model-6", "model-7"}  # scored within the last 4 bars' targets
    assert watches == 2


def test_champion_age_gauge_follows_the_serving_model(tmp_db: Database, tmp_path: Path) -> None:
    """`barcast_champion_age_seconds` has one label set per series: the champion's. The previous
    champion's label used to stay, frozen at its last age, after every promotion."""
    import dataclasses

    from daemon import metrics
    from daemon.config import Config, SeriesConfig
    from daemon.live.pipeline import Pipeline
    from daemon.live.service import Service
    from db import registry
    from db.records import ModelInfo

    key = SeriesKey("binance", "AGE-USDT")  # a series of its own: the gauge is process-wide
    config = Config(series=(SeriesConfig(key.exchange, key.symbol),))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))
    svc = Service(config)
    svc.database = tmp_db
    svc.pipeline = pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
    seen = []
    try:
        for model_id in ("champ-a", "champ-b"):
            registry.register_model(tmp_db, ModelInfo(model_id, "linear", (key,), None, None, {}, {}, None))
            registry.promote(tmp_db, model_id, key)
            pipe.book.swap(config.model_group(key), ServingModel.of(model_id, _Doubler()))
            svc._refresh_gauges()
            seen.append({s.labels["model"] for m in metrics.CHAMPION_AGE.collect() for s in m.samples
                         if s.labels["series"] == str(key)})
    finally:
        pipe.close()
    assert seen == [{"champ-a"}, {"champ-b"}]


def test_log_catch_up_after_a_crash_reaches_into_the_rotated_file(tmp_db: Database, tmp_path: Path) -> None:
    """Killed between storing a forecast and logging it, just after the log rotated: the series had
    no line in the new file yet, so the start-up catch-up (which read the current file only) took
    it for a new log and never appended the lost line. It now reads `.1` too."""
    import dataclasses

    from daemon.config import Config, SeriesConfig
    from daemon.live.pipeline import Pipeline
    from db.forecasts import store_new_forecasts

    eth = SeriesKey("binance", "ETH-USDT")
    config = Config(series=(SeriesConfig(S.exchange, S.symbol), SeriesConfig(eth.exchange, eth.symbol)))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))

    def fc(key: SeriesKey, i: int) -> Forecast:
        t = T0 + timedelta(minutes=5 * i)
        return Forecast(key, t, "persistence", (t + timedelta(minutes=5),), (100.0,), last_close=D("100"))

    path = tmp_path / "f.jsonl"
    before = [fc(S, 0), fc(eth, 0)]
    store_new_forecasts(tmp_db, before)
    flog = ForecastLog(path, max_bytes=1)  # every write after the first rotates
    flog.write(before)
    store_new_forecasts(tmp_db, [fc(S, 1)])
    flog.write([fc(S, 1)])  # rotated: the ETH line is in .1 only
    store_new_forecasts(tmp_db, [fc(eth, 1)])  # ... stored, then killed before its line was written
    flog.close()
    assert (path.parent / "f.jsonl.1").exists()

    pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(path, max_bytes=0))
    try:
        assert pipe.reconcile_log() == 1
    finally:
        pipe.forecast_log.close()
        pipe.close()
    logged = [orjson.loads(ln) for f in sorted(path.parent.glob("f.jsonl*")) for ln in f.read_bytes().splitlines()]
    assert sorted((d["series"], d["issued_at"]) for d in logged) == sorted(
        (str(f.series), f.issued_at.isoformat().replace("+00:00", "Z")) for f in [*before, fc(S, 1), fc(eth, 1)])


def test_a_shutdown_that_times_out_still_hands_its_series_on(tmp_path: Path) -> None:
    """A shutdown abandoned at `service.shutdown_timeout_s` used to skip `Membership.leave`, so
    another daemon waited out the lease TTL (60 s by default) to take the series over."""
    import dataclasses

    from daemon.config import Config, SeriesConfig
    from daemon.live.membership import Membership
    from daemon.live.service import Service
    from db import cluster
    from db.engine import open_database

    key = SeriesKey("binance", "HANG-USDT")
    url = f"sqlite:///{tmp_path / 'b.db'}"
    config = Config(series=(SeriesConfig(key.exchange, key.symbol),))
    config = dataclasses.replace(config, service=dataclasses.replace(config.service, shutdown_timeout_s=0.2))
    svc = Service(config)

    async def hang() -> None:
        await asyncio.sleep(3600)  # a drain that never ends

    async def go() -> None:
        svc.database = open_database(url)
        svc.membership = Membership(svc.database, "d-hang", [key], solo=True, heartbeat_s=10.0, ttl_s=60.0)
        await svc.membership.round()
        assert svc.membership.owned == {key}
        svc._shutdown = hang  # type: ignore[method-assign]
        await svc.shutdown()

    asyncio.run(go())
    database = open_database(url)
    lease = cluster.series_leases(database)[key]
    database.close()
    assert lease.owner == "" and not lease.live(datetime.now(UTC)), lease


def test_auto_device_leaves_the_backend_unloaded_until_a_network_model_loads_it() -> None:
    """`forecast.device = "auto"` imported TensorFlow at start to look for a GPU: ~600 MB of
    memory and seconds of start-up in a daemon serving numpy models (`har`, the baselines)."""
    import os
    import subprocess
    import sys

    probe = ("import sys; from daemon.live.device import select_device; d = select_device('auto'); "
             "print(d.device, d.describe(), 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"}).stdout
    assert out.startswith("auto keras backend tensorflow not loaded") and out.split()[-2:] == ["False", "False"], out

    import keras  # what serving a network model does

    from daemon.live.device import DeviceInfo, current

    assert keras.backend.backend() == "tensorflow"
    now = current(DeviceInfo("tensorflow", "auto", ()))
    assert now.device in ("cpu", "gpu") and now.describe().startswith("keras backend tensorflow on ")
    assert current(now) == now  # detected once


def test_a_daemons_status_leaves_another_daemons_series_to_the_database(tmp_db: Database, tmp_path: Path) -> None:
    """Two daemons sharing the series: `barcast status` asks one of them. Its rows for the series
    it does not own (never, or no longer: handed on) used to overwrite the database's last bar,
    champion and last forecast with empty values, or with the frozen window of a series it had
    handed on, and said `feed: connected` for a symbol it does not subscribe to."""
    import dataclasses

    from daemon.config import Config, SeriesConfig
    from daemon.live.pipeline import Pipeline
    from daemon.live.service import Service
    from daemon.ops.reports import merge_status, status_from_database
    from db import registry
    from db.bars import upsert_bars
    from db.forecasts import store_new_forecasts
    from db.records import ModelInfo

    mine, handed, theirs = S, SeriesKey("binance", "ETH-USDT"), SeriesKey("binance", "SOL-USDT")
    keys = (mine, handed, theirs)
    config = Config(series=tuple(SeriesConfig(k.exchange, k.symbol) for k in keys))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))
    upsert_bars(tmp_db, [dataclasses.replace(bar(i), exchange=k.exchange, symbol=k.symbol) for k in keys
                         for i in range(3)])
    registry.register_model(tmp_db, ModelInfo("persistence", "persistence", keys, None, None, {}, {}, None))
    for k in keys:
        registry.promote(tmp_db, "persistence", k)
    pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"),
                    owned=[mine, handed])
    svc = Service(config)
    svc.database, svc.pipeline = tmp_db, pipe
    try:
        pipe.restore()
        pipe.drop([handed])  # handed to the other daemon, which goes on storing and forecasting
        newest = bar(5)
        for k in (handed, theirs):
            upsert_bars(tmp_db, [dataclasses.replace(newest, exchange=k.exchange, symbol=k.symbol)])
            store_new_forecasts(tmp_db, [Forecast(k, newest.open_time, "persistence",
                                                  (newest.open_time + k.step,), (1.0,), last_close=D("1"))])
        doc = merge_status(status_from_database(tmp_db, list(keys)), svc.status())
    finally:
        pipe.close()
    rows = {r["series"]: r for r in doc["series"]}
    for k in (handed, theirs):
        row = rows[str(k)]
        assert (row["last_bar"], row["last_forecast"]) == ("2021-01-01T00:25:00Z",) * 2, row
        assert row["champion"] == "persistence" and row["feed"] is None, row
    assert rows[str(mine)]["last_bar"] == bar(2).open_time and rows[str(mine)]["feed"] == "disconnected"


def test_log_catch_up_leaves_out_what_another_live_daemon_issued(tmp_db: Database, tmp_path: Path) -> None:
    """In cluster mode a series this daemon had logged may have been another daemon's since: at
    start the log catch-up wrote that daemon's forecasts into this log too (seen with two daemons
    on PostgreSQL after a crash: 82 lines of the other's). It writes what a crashed predecessor
    of this host (its heartbeat row still fresh, its process gone) or a daemon no longer alive
    issued, not what a live one did."""
    import dataclasses
    import subprocess
    import sys

    from daemon.config import Config, SeriesConfig
    from daemon.live.membership import Membership
    from daemon.live.pipeline import Pipeline
    from db import cluster
    from db.forecasts import store_new_forecasts

    config = Config(series=(SeriesConfig(S.exchange, S.symbol),))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))
    t0 = datetime(2021, 1, 1, tzinfo=UTC)

    def fc(i: int, by: str) -> Forecast:
        t = t0 + timedelta(minutes=5 * i)
        return Forecast(S, t, "persistence", (t + timedelta(minutes=5),), (100.0,), last_close=D("100"), issued_by=by)

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    now = datetime.now(UTC)
    for iid, host, pid in (("other", "elsewhere", 1), ("crashed", socket.gethostname(), exited.pid)):
        cluster.heartbeat(tmp_db, cluster.Instance(iid, host, pid, now, now, now), timedelta(minutes=5))
    member = Membership(tmp_db, "me", [S], solo=False, heartbeat_s=1, ttl_s=60)
    assert member.others_alive() == {"other"}
    assert Membership(tmp_db, "me", [S], solo=True, heartbeat_s=1, ttl_s=60).others_alive() == set()

    path = tmp_path / "f.jsonl"
    logged = [fc(0, "crashed")]
    store_new_forecasts(tmp_db, logged)
    ForecastLog(path).write(logged)
    store_new_forecasts(tmp_db, [fc(1, "crashed"), fc(2, "other"), fc(3, "gone")])  # none of them logged here
    pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(path))
    try:
        assert pipe.reconcile_log(member.others_alive()) == 2
    finally:
        pipe.forecast_log.close()
        pipe.close()
    lines = [orjson.loads(ln) for ln in path.read_bytes().splitlines()]
    assert [d["issued_at"] for d in lines] == [iso(t0 + timedelta(minutes=5 * i)) for i in (0, 1, 3)]
