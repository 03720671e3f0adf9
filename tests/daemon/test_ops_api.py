"""The HTTP API on a real uvicorn server on 127.0.0.1: happy paths, bad input, injection, concurrency, SSE."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import ApiConfig
from daemon.live.broadcast import Broadcast, Subscription
from daemon.live.forecastlog import forecast_line
from daemon.ops.api import ApiServer, check_bind, create_app
from db.bars import read_bars
from db.engine import Database, open_database
from db.errors import ConfigError
from db.forecasts import insert_forecasts, store_new_forecasts
from db.records import Forecast, SeriesKey
from tests.daemon.clirun import barcast
from tests.daemon.opsdata import BTC, DRIFT, ETH, FORECAST_BARS, forecasts_for, ops_db_url


class FakeLive:
    """LiveHooks as the daemon provides them: a status view and the daemon's broadcast of forecasts."""

    def __init__(self, maxsize: int = 64) -> None:
        self.broadcast = Broadcast(maxsize=maxsize)

    def status(self) -> dict[str, Any]:
        return {"ready": False, "reasons": ["window of binance:BTC-USDT:5m not restored"],
                "next_retrain": "2021-07-18T00:00:00Z",
                "feeds": {"binance": {"connected": True, "reconnects": 2, "malformed": 0}},
                "series": [{"series": str(BTC), "feed": {"connected": True}}]}

    def subscribe(self) -> Subscription:
        return self.broadcast.subscribe()

    def stream_issuer(self) -> str | None:
        return None


class Running:
    def __init__(self, database: Database, live: FakeLive | None = None, token: str | None = None,
                 series: tuple[SeriesKey, ...] = (BTC,)) -> None:
        self.app = create_app(database, live=live, token=token, max_limit=50, series=series)
        self.api = ApiServer(self.app, "127.0.0.1", 0)
        self.api.bind()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.api.serve(),), daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.api.server.started:
                break
            threading.Event().wait(0.02)
        self.url = self.api.url

    def stop(self) -> None:
        self.api.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "server did not stop"


@pytest.fixture
def database(tmp_path: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = open_database(ops_db_url(tmp_path, shared_dir, tmp_path_factory.getbasetemp()))
    yield db
    db.close()


@pytest.fixture
def server(database: Database) -> Iterator[Running]:
    r = Running(database)
    yield r
    r.stop()


def test_happy_paths(server: Running) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        h = c.get("/health")
        assert h.status_code == 200 and h.json() == {"live": True, "ready": True, "reasons": [], "mode": "database"}
        f = c.get("/forecasts", params={"series": "binance:BTC-USDT", "limit": 5}).json()
        assert f["count"] == 5 and f["forecasts"][0]["issued_at"] == "2021-07-17T21:05:00Z"
        fans = [d for d in f["forecasts"] if d["quantiles"] is not None]
        assert fans and all(d["levels"] == [0.1, 0.5, 0.9] for d in fans)
        assert all(lo <= mid <= hi for d in fans for lo, mid, hi in d["quantiles"])
        assert any(d["quantiles"] is None and d["levels"] is None for d in f["forecasts"])  # point-only rows
        capped = c.get("/forecasts", params={"limit": 100000}).json()
        assert capped["limit"] == 50 and capped["count"] == 50
        latest = c.get("/forecasts/latest").json()["forecasts"]
        assert {d["series"] for d in latest} == {str(BTC), str(ETH)}
        bars = c.get("/bars", params={"series": "binance:ETH-USDT:5m", "limit": 3}).json()
        assert [b["open_time"] for b in bars["bars"]][-1] == "2021-07-17T21:10:00Z" and bars["count"] == 3
        ranged = c.get("/bars", params={"series": str(BTC), "since": "2021-07-17T20:00:00", "until": 1626555600})
        assert ranged.json()["count"] == 12
        acc = c.get("/accuracy", params={"window": "all", "model": "drift-16"}).json()["accuracy"]
        assert len(acc) == 32 and acc[0]["n"] == FORECAST_BARS - 1
        assert acc[0]["coverage"] is None and acc[0]["n_quantile"] == 0
        fan = c.get("/accuracy", params={"window": "all", "model": "persistence"}).json()["accuracy"]
        assert len(fan) == 32 and all(0.0 < a["coverage"] < 1.0 and a["pinball"]["q50"] > 0 for a in fan)
        models = c.get("/models").json()["models"]
        assert {m["id"]: m["champion_of"] for m in models} == {
            "drift-16-btc-usdt": [str(BTC)], "drift-16-eth-usdt": [str(ETH)]}
        st = c.get("/status").json()
        assert st["source"] == "database" and st["series"][0]["series"] == str(BTC)
        m = c.get("/metrics")
        names = {fam.name for fam in text_string_to_metric_families(m.text)}
        assert "barcast_process_resident_memory_bytes" in names and "barcast_forecast_latency_seconds" in names
        fams = {f.name: f for f in text_string_to_metric_families(m.text)}
        rss = fams["barcast_process_resident_memory_bytes"]
        assert rss.samples[0].value > 10_000_000
        assert c.get("/forecasts/stream").status_code == 503  # no live daemon behind this API
        assert c.post("/forecasts").status_code == 405


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/forecasts", {"series": "binance"}),
        ("/forecasts", {"series": "binance:BTC-USDT:7m"}),
        ("/forecasts", {"series": "binance:BTC-USDT' OR '1'='1"}),
        ("/forecasts", {"since": "yesterday"}),
        ("/forecasts", {"since": "2021-07-18", "until": "2021-07-17"}),
        ("/forecasts", {"limit": 0}),
        ("/forecasts", {"limit": "ten"}),
        ("/forecasts", {"limit": "1e99"}),
        ("/forecasts", {"since": "99999999999999999999"}),
        ("/bars", {}),
        ("/bars", {"series": "'; DELETE FROM bars; --"}),
        ("/bars", {"series": "x" * 500}),
        ("/accuracy", {"window": "1 OR 1=1"}),
        ("/models", {"status": "champion' OR '1'='1"}),
        # an exchange barcast does not speak is a typo, as in the CLI (it answered an empty 200)
        ("/forecasts", {"series": "coinbse:BTC-USD"}),
        ("/forecasts/latest", {"series": "coinbse:BTC-USD"}),
        ("/bars", {"series": "coinbse:BTC-USD"}),
        ("/accuracy", {"series": "coinbse:BTC-USD"}),
        ("/models", {"series": "coinbse:BTC-USD"}),
    ],
)
def test_bad_input_is_4xx_json(server: Running, database: Database, path: str, params: dict[str, Any]) -> None:
    r = httpx.get(server.url + path, params=params, timeout=10)
    assert 400 <= r.status_code < 500, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert len(read_bars(database, BTC, limit=1)) == 1  # nothing was dropped


@pytest.mark.parametrize("window", ["999999d", "99999999999d", "99999999999w"])
def test_an_accuracy_window_longer_than_history_is_all_of_it(server: Running, window: str) -> None:
    """A window reaching back past 1970 (or past what a timedelta holds) means from the beginning;
    it used to overflow into a 500."""
    r = httpx.get(server.url + "/accuracy", params={"window": window}, timeout=10)
    assert r.status_code == 200, r.text
    everything = httpx.get(server.url + "/accuracy", params={"window": "all"}, timeout=10).json()["accuracy"]
    assert r.json()["since"] == "1970-01-01T00:00:00Z" and r.json()["accuracy"] == everything != []


def test_unknown_path_and_wrong_method_answer_the_error_shape(server: Running) -> None:
    """The router's own 404 and 405 are `{"error": …}` like every other error, not `{"detail": …}`."""
    r = httpx.get(server.url + "/forecast", timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = httpx.delete(server.url + "/bars", timeout=10)
    assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"} and r.headers["allow"] == "GET"


def test_injection_string_as_a_model_id_is_just_data(server: Running) -> None:
    r = httpx.get(server.url + "/forecasts", params={"model": "x' OR 1=1; DROP TABLE forecasts; --"}, timeout=10)
    assert r.status_code == 404 and "no such model" in r.json()["error"]  # a name like any other
    assert httpx.get(server.url + "/forecasts", timeout=10).json()["count"] == 50


def test_openapi_matches_routes(server: Running) -> None:
    from fastapi.routing import APIRoute

    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    routes = {r.path for r in server.app.routes if isinstance(r, APIRoute) and r.include_in_schema}
    assert routes == set(spec["paths"])
    assert routes >= {"/health", "/forecasts", "/forecasts/latest", "/forecasts/stream", "/bars", "/accuracy",
                      "/models", "/status", "/metrics"}
    assert all(set(ops) == {"get"} for ops in spec["paths"].values())
    # the forecast and accuracy documents are described field by field, quantiles included
    doc = spec["components"]["schemas"]["ForecastDoc"]["properties"]
    assert {"levels", "quantiles", "closes", "targets", "actuals"} <= set(doc)
    assert doc["quantiles"]["anyOf"][0]["items"]["items"]["type"] == "number"
    acc = spec["components"]["schemas"]["AccuracyDoc"]["properties"]
    assert {"pinball", "pinball_mean", "wis", "coverage", "nominal_coverage", "width"} <= set(acc)
    try:
        from openapi_spec_validator import validate
    except ImportError:
        return
    validate(spec)


def test_concurrent_readers_while_a_writer_inserts(server: Running, database: Database) -> None:
    bars = read_bars(database, BTC)[-FORECAST_BARS - 200 : -FORECAST_BARS]
    stop = threading.Event()
    written = []

    def writer() -> None:
        for i in range(16, len(bars)):
            f = forecasts_for(bars, i, "writer-test", bars[i].open_time + timedelta(minutes=5))
            insert_forecasts(database, [replace(f, issued_at=f.issued_at)])
            written.append(f)
        stop.set()

    def reader(n: int) -> int:
        ok = 0
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set() or ok < 5:
                path = ("/forecasts", "/status", "/accuracy", "/forecasts/latest", "/metrics")[(n + ok) % 5]
                r = c.get(path, params={"model": "writer-test"} if path == "/forecasts" else None)
                assert r.status_code == 200, r.text
                ok += 1
        return ok

    t = threading.Thread(target=writer)
    t.start()
    with ThreadPoolExecutor(6) as pool:
        counts = list(pool.map(reader, range(6)))
    t.join()
    assert all(c >= 5 for c in counts)
    final = httpx.get(server.url + "/forecasts", params={"model": "writer-test", "limit": 1000}, timeout=10).json()
    assert final["count"] == 50 and len(written) == len(bars) - 16  # capped at max_limit


def test_token_and_bind_rules(database: Database) -> None:
    r = Running(database, token="s3cret")
    try:
        assert httpx.get(r.url + "/health").status_code == 200  # probes need no token
        assert httpx.get(r.url + "/status").status_code == 401
        assert httpx.get(r.url + "/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(r.url + "/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for open_path in ("/openapi.json", "/docs", "/redoc"):  # no data; the README says they stay open
            assert httpx.get(r.url + open_path).status_code == 200
    finally:
        r.stop()
    with pytest.raises(ConfigError, match=r"api\.host"):
        check_bind(ApiConfig(host="0.0.0.0"))
    check_bind(ApiConfig(host="0.0.0.0", token="t"))
    check_bind(ApiConfig(host="0.0.0.0", allow_insecure_remote=True))
    check_bind(ApiConfig(host="::1"))


def test_live_status_health_and_stream(database: Database, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    live = FakeLive()
    r = Running(database, live=live)
    try:
        h = httpx.get(r.url + "/health")
        assert h.status_code == 503 and h.json()["reasons"] == ["window of binance:BTC-USDT:5m not restored"]
        st = httpx.get(r.url + "/status").json()
        assert st["source"] == "daemon" and st["next_retrain"] == "2021-07-18T00:00:00Z"
        assert st["series"][0]["feed"] == {"connected": True} and st["series"][0]["bars"] == 65741
        # `barcast status` asks the daemon first.
        monkeypatch.setenv("BARCAST_API__PORT", str(r.api.port))
        res = barcast(capsys, "--db", database.url, "status", "--format", "json")
        assert json.loads(res.out)["source"] == "daemon"
        # A stream of an exchange barcast does not speak would never carry an event: refused at once.
        bad = httpx.get(r.url + "/forecasts/stream", params={"series": "coinbse:BTC-USD"}, timeout=10)
        assert bad.status_code == 400 and "unknown exchange 'coinbse'" in bad.json()["error"]
        assert "coinbase" in bad.json()["error"]

        objs = [{"series": str(k), "exchange": k.exchange, "symbol": k.symbol, "interval": k.interval,
                 "issued_at": f"2021-07-17T21:{i:02d}:00Z"} for i in range(3) for k in (BTC, ETH)]
        got: list[dict[str, Any]] = []
        with httpx.Client(timeout=20) as c, c.stream("GET", r.url + "/forecasts/stream",
                                                      params={"series": "binance:ETH-USDT"}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.iter_lines()
            assert next(lines) == "retry: 5000"  # how long an EventSource waits before it reconnects
            assert next(lines).startswith(":")  # the opening comment: the subscription exists
            assert live.broadcast.subscribers == 1  # subscribed before the stream's first line
            for i, o in enumerate(objs):
                r.loop.call_soon_threadsafe(live.broadcast.publish, i + 1, o)
            for line in lines:
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if len(got) == 3:
                        break
        assert [g["issued_at"] for g in got] == [o["issued_at"] for o in objs if o["symbol"] == "ETH-USDT"]
    finally:
        r.stop()
    assert live.broadcast.subscribers == 0  # the subscription was closed when the client left


def test_cli_bars_and_api_bars_answer_the_same_page(
    server: Running, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--limit` means the newest N, or with `--since` the first N from it, in both faces."""
    url = str(database.engine.url)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        queries: list[dict[str, str | int]] = [{"limit": 3}, {"since": "2021-07-17T20:00:00Z", "limit": 4}]
        for query in queries:
            api = [b["open_time"] for b in c.get("/bars", params={"series": str(BTC), **query}).json()["bars"]]
            args = [f"--{k}={v}" for k, v in query.items()]
            res = barcast(capsys, "--db", url, "bars", "--series", str(BTC), *args, "--format", "json")
            assert res.code == 0, res.err
            assert [b["open_time"] for b in json.loads(res.out)] == api and len(api) == query["limit"]
    assert api[0] == "2021-07-17T20:00:00Z"  # the page starts where --since says


class Event:
    def __init__(self, fields: dict[str, str]) -> None:
        self.id = int(fields["id"]) if "id" in fields else None
        self.event = fields.get("event", "message")
        self.data = json.loads(fields["data"])


class Stream:
    """One SSE connection, read event by event (an event ends with its `data:` line, as ours do)."""

    def __init__(self, r: Running, **kw: Any) -> None:
        self.client = httpx.Client(timeout=20)
        self.cm = self.client.stream("GET", r.url + "/forecasts/stream", **kw)
        self.resp = self.cm.__enter__()
        assert self.resp.status_code == 200, self.resp.read()
        self.lines = self.resp.iter_lines()

    def take(self, n: int, until: int | None = None) -> list[Event]:
        """The next `n` events, or (with `until`) every event up to the one with that id."""
        out: list[Event] = []
        fields: dict[str, str] = {}
        while len(out) < n if until is None else not out or out[-1].id != until:
            line = next(self.lines)
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            if name == "data":
                out.append(Event(fields))
                fields = {}
        return out

    def close(self) -> None:
        self.cm.__exit__(None, None, None)
        self.client.close()


class Issuer:
    """Forecasts as the daemon issues them: stored, then published on the server's loop."""

    def __init__(self, database: Database, bars: int = 100) -> None:
        """Up to `bars` - 50 forecasts (each on its own bar, with 50 before it)."""
        self.database = database
        self.bars = {k: read_bars(database, k)[-FORECAST_BARS - bars : -FORECAST_BARS] for k in (BTC, ETH)}
        self.n = 0

    def make(self, *keys: Any) -> list[Forecast]:
        out = []
        for k in keys:
            self.n += 1
            out.append(forecasts_for(self.bars[k], 50 + self.n, "resume-test", self.bars[k][-1].open_time))
        return out

    def store(self, *keys: Any) -> list[Forecast]:
        return store_new_forecasts(self.database, self.make(*keys))

    def issue(self, r: Running, live: FakeLive, *keys: Any) -> list[Forecast]:
        new = self.store(*keys)
        publish(r, live, new)
        return new


def publish(r: Running, live: FakeLive, new: list[Forecast]) -> None:
    async def go() -> None:
        for f in new:
            assert f.seq is not None
            live.broadcast.publish(f.seq, forecast_line(f))

    asyncio.run_coroutine_threadsafe(go(), r.loop).result(10)


def test_stream_resumes_after_the_last_event_id(database: Database) -> None:
    """Every event has an id; a client back with Last-Event-ID gets exactly what it missed, then live
    ones, with none twice across the hand-over; also after the daemon restarted."""
    live = FakeLive()
    r = Running(database, live=live)
    iss = Issuer(database)
    try:
        s = Stream(r)
        sent = iss.issue(r, live, BTC, ETH, BTC)
        got = s.take(3)
        s.close()
        assert [g.id for g in got] == [f.seq for f in sent] and got[0].id < got[1].id < got[2].id  # type: ignore[operator]
        assert [g.data for g in got] == [forecast_line(f) for f in sent] and {g.event for g in got} == {"forecast"}
        last = got[-1].id

        missed = iss.issue(r, live, ETH, BTC, ETH)  # issued while the client was away
        pending = iss.store(BTC)  # stored before the replay is read, published (by the pipeline) after
        s = Stream(r, headers={"Last-Event-ID": str(last)})
        replayed = s.take(4)
        publish(r, live, pending)  # already replayed: not sent again
        fresh = iss.issue(r, live, ETH, BTC)
        tail = s.take(2)
        s.close()
        assert [g.id for g in replayed] == [f.seq for f in missed + pending]
        assert [g.data for g in replayed] == [forecast_line(f) for f in missed + pending]  # as live ones are
        assert [g.id for g in tail] == [f.seq for f in fresh]

        # one series, the id as a query parameter (for clients that cannot send headers)
        eth = [f for f in missed + pending + fresh if f.series == ETH]
        s = Stream(r, params={"series": "binance:ETH-USDT", "last_event_id": str(last)})
        first = s.take(len(eth))
        more = iss.issue(r, live, BTC, ETH)
        assert [g.id for g in first + s.take(1)] == [f.seq for f in eth + more[1:]]
        s.close()
        # an EventSource reconnecting sends its newest id as the header; its URL keeps the old parameter
        s = Stream(r, params={"last_event_id": "0"}, headers={"Last-Event-ID": str(more[-1].seq)})
        one = iss.issue(r, live, BTC)
        assert [g.id for g in s.take(1)] == [f.seq for f in one]  # not a replay from 0
        s.close()
        last = more[-1].seq + 1  # type: ignore[operator]
    finally:
        r.stop()
    down = iss.store(ETH, BTC)  # stored while no daemon served (a restart)
    live = FakeLive()
    r = Running(database, live=live)
    try:
        s = Stream(r, headers={"Last-Event-ID": str(last)})
        assert [g.id for g in s.take(2)] == [f.seq for f in down]
        s.close()
    finally:
        r.stop()


def test_a_client_far_behind_gets_the_newest_and_is_told(database: Database) -> None:
    """The replay is bounded by api.max_limit (50 here): the newest 50 after the id, after a
    `truncated` event saying how many were left out."""
    from sqlalchemy import text

    with database.engine.connect() as conn:
        seqs = list(conn.execute(text("SELECT seq FROM forecast_seq ORDER BY seq")).scalars())
    live = FakeLive()
    r = Running(database, live=live)
    try:
        s = Stream(r, headers={"Last-Event-ID": str(seqs[9])})
        note, *events = s.take(51)
        s.close()
        assert note.event == "truncated" and note.id is None
        assert note.data == {"last_event_id": seqs[9], "skipped": len(seqs) - 60, "replayed": 50,
                             "resumed_at": seqs[-50]}
        assert [e.id for e in events] == seqs[-50:] and len(seqs) > 100
        s = Stream(r, headers={"Last-Event-ID": str(seqs[-3])})
        assert [(e.event, e.id) for e in s.take(2)] == [("forecast", seqs[-2]), ("forecast", seqs[-1])]
        s.close()
    finally:
        r.stop()


def test_a_slow_subscriber_overrun_by_a_burst_gets_every_forecast_once(database: Database) -> None:
    """A subscription's queue (4 here) overrun by a burst (a restart's catch-up) dropped its oldest
    items and the client never knew: now the stream refills the hole from the database, as a
    Last-Event-ID resume does, and each forecast arrives once, in order; live ones go on after.
    Each read goes up to a marker issued after the burst, so a lost event fails, never hangs."""
    from daemon import metrics

    refills = metrics.REGISTRY.get_sample_value("barcast_stream_refills_total") or 0.0
    live = FakeLive(maxsize=4)
    r = Running(database, live=live)
    iss = Issuer(database, bars=200)
    try:
        s = Stream(r)
        eth = Stream(r, params={"series": "binance:ETH-USDT"})
        burst = iss.issue(r, live, *[BTC, ETH] * 15)  # 30 published at once into queues of 4
        marker = iss.issue(r, live, ETH)
        got = s.take(0, until=marker[0].seq)
        assert [g.id for g in got] == [f.seq for f in burst + marker]
        assert [g.data for g in got] == [forecast_line(f) for f in burst + marker]
        assert {g.event for g in got} == {"forecast"}
        assert [g.id for g in eth.take(0, until=marker[0].seq)] == [
            f.seq for f in burst + marker if f.series == ETH]
        more = iss.issue(r, live, ETH, BTC)  # then live again, nothing twice
        assert [g.id for g in s.take(2)] == [f.seq for f in more]
        assert [g.id for g in eth.take(1)] == [more[0].seq]
        s.close()
        eth.close()
        assert (metrics.REGISTRY.get_sample_value("barcast_stream_refills_total") or 0.0) >= refills + 2

        # overrun mid-stream, after a resume: refilled after the last id sent
        s = Stream(r, headers={"Last-Event-ID": str(more[-1].seq)})
        one = iss.issue(r, live, BTC)
        assert [g.id for g in s.take(1)] == [f.seq for f in one]
        burst = iss.issue(r, live, *[ETH, BTC] * 10) + iss.issue(r, live, BTC)
        assert [g.id for g in s.take(0, until=burst[-1].seq)] == [f.seq for f in burst]
        s.close()

        # further behind than api.max_limit (50): told, as a resume is, then the newest 50
        s = Stream(r)
        burst = iss.store(*[BTC] * 60, ETH)  # all stored before any is published: 61 after the hole's start
        publish(r, live, burst)
        note, *events = s.take(0, until=burst[-1].seq)
        assert note.event == "truncated" and note.data == {
            "last_event_id": burst[0].seq - 1, "skipped": 11, "replayed": 50,  # type: ignore[operator]
            "resumed_at": burst[11].seq}
        assert [e.id for e in events] == [f.seq for f in burst[11:]]
        s.close()
    finally:
        r.stop()


@pytest.mark.parametrize(("header", "query"), [
    ("abc", None), ("-1", None), ("1.5", None), (None, "١٢"), ("9" * 19, None), (None, "x"), ("12 34", None)])
def test_a_malformed_last_event_id_is_400(database: Database, header: str | None, query: str | None) -> None:
    live = FakeLive()
    r = Running(database, live=live)
    try:
        resp = httpx.get(r.url + "/forecasts/stream", timeout=10,
                         headers={"Last-Event-ID": header} if header else None,
                         params={"last_event_id": query} if query else None)
        assert resp.status_code == 400 and "Last-Event-ID" in resp.json()["error"], resp.text
        assert live.broadcast.subscribers == 0
    finally:
        r.stop()


SERIES_PATHS = {"/forecasts": ("forecasts",), "/forecasts/latest": ("forecasts", "--latest"), "/bars": ("bars",),
                "/gaps": ("gaps",), "/accuracy": ("accuracy",), "/models": ("models", "list"),
                "/forecasts/stream": None}


def test_a_series_neither_configured_nor_stored_is_404_as_the_cli_says(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid exchange with a series barcast never saw answered an empty 200 (the CLI exits 2):
    now a 404 naming it, on every endpoint that takes `series`, with the CLI's words. A series
    that is configured but has nothing stored yet is no error: an empty 200."""
    sol = SeriesKey("binance", "SOL-USDT")
    live = FakeLive()
    r = Running(database, live=live, series=(BTC, sol))
    try:
        for path, cli in SERIES_PATHS.items():
            resp = httpx.get(r.url + path, params={"series": "binance:NOPE-USDT"}, timeout=10)
            assert resp.status_code == 404, (path, resp.text)
            error = resp.json()["error"]
            assert error.startswith("series binance:NOPE-USDT:5m: no such series"), error
            assert str(BTC) in error and str(ETH) in error and str(sol) in error  # the known ones
            if cli is not None:
                res = barcast(capsys, "--db", database.url, *cli, "--series", "binance:NOPE-USDT")
                said = error.split(" (known:")[0]  # the CLI's config lists other configured series
                assert res.code == 2 and f"error: --{said} (known: " in res.err, (cli, res.err)
            if path == "/forecasts/stream":
                continue
            empty = httpx.get(r.url + path, params={"series": str(sol)}, timeout=10)
            assert empty.status_code == 200, (path, empty.text)
            body = empty.json()
            assert body.get("count", 0) == 0 and not body.get("accuracy") and not body.get("bars"), (path, body)
        assert live.broadcast.subscribers == 0
    finally:
        r.stop()


MODEL_PATHS = {"/forecasts": ("forecasts",), "/forecasts/latest": ("forecasts", "--latest"),
               "/accuracy": ("accuracy",)}


def test_a_model_neither_registered_nor_forecasting_is_404_as_the_cli_says(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt `model` answered an empty 200 where the CLI exits 2 naming the valid ones."""
    r = Running(database)
    try:
        for path, cli in MODEL_PATHS.items():
            resp = httpx.get(r.url + path, params={"model": "nope-model"}, timeout=10)
            assert resp.status_code == 404, (path, resp.text)
            error = resp.json()["error"]
            assert error.startswith("model 'nope-model': no such model") and DRIFT in error, error
            res = barcast(capsys, "--db", database.url, *cli, "--model", "nope-model")
            assert res.code == 2 and error.split(": ", 1)[1] in res.err, (cli, res.err)
            good = httpx.get(r.url + path, params={"model": DRIFT}, timeout=10)
            assert good.status_code == 200, (path, good.text)
    finally:
        r.stop()
