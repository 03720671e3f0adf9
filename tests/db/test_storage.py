"""Storage behaviour, run identically on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from db import leases, registry
from db.bars import bars_frame, last_bars, latest_bar, read_bars, series_stats, upsert_bars
from db.engine import Database
from db.errors import InputError
from db.forecasts import insert_forecasts, latest_forecast, query_forecasts
from db.records import Bar, Forecast, ModelInfo, SeriesKey

T0 = datetime(2021, 1, 1, tzinfo=UTC)
S = SeriesKey("binance", "BTC-USDT", "5m")


def make_bars(n: int, start: datetime = T0, series: SeriesKey = S) -> list[Bar]:
    return [
        Bar(series.exchange, series.symbol, series.interval, start + timedelta(minutes=5 * i),
            D("19695.87") + i, D("19720.0") + i, D("19578.96") + i, D("19607.03") + i, D("0.00000021"), 7)
        for i in range(n)
    ]


def test_upsert_is_idempotent_and_exact(any_db: Database) -> None:
    bars = make_bars(50)
    assert upsert_bars(any_db, bars) == 50
    assert upsert_bars(any_db, bars) == 0  # same bars again: nothing changes
    back = read_bars(any_db, S)
    assert [b.open_time for b in back] == [b.open_time for b in bars]
    # exact text survives, trailing zeros and tiny sizes included
    assert str(back[0].high) == "19720.0"
    assert format(back[0].volume, "f") == "0.00000021"
    assert all(a.same_values(b) for a, b in zip(back, bars, strict=True))


def test_corrected_bar_replaces_old(any_db: Database) -> None:
    bars = make_bars(3)
    upsert_bars(any_db, bars)
    fixed = dataclasses.replace(bars[1], close=D("1.5"), low=D("1.5"), volume=D("2"), source="backfill")
    assert upsert_bars(any_db, [fixed]) == 1
    got = read_bars(any_db, S)[1]
    assert got.close == D("1.5") and got.volume == D("2") and got.source == "backfill"
    assert len(read_bars(any_db, S)) == 3


def test_reads_by_range_and_latest(any_db: Database) -> None:
    upsert_bars(any_db, make_bars(20))
    upsert_bars(any_db, make_bars(5, series=SeriesKey("coinbase", "BTC-USD")))
    since, until = T0 + timedelta(minutes=25), T0 + timedelta(minutes=50)
    got = read_bars(any_db, S, since=since, until=until)
    assert [b.open_time for b in got] == [T0 + timedelta(minutes=5 * i) for i in range(5, 10)]
    last = latest_bar(any_db, S)
    assert last is not None and last.open_time == T0 + timedelta(minutes=95)
    window = last_bars(any_db, S, 4)
    assert [b.open_time for b in window] == [T0 + timedelta(minutes=5 * i) for i in range(16, 20)]
    frame = bars_frame(any_db, S)
    assert len(frame) == 20 and frame.index.tz is not None
    assert frame["close"].iloc[0] == pytest.approx(19607.03)
    stats = {str(s.series): s for s in series_stats(any_db)}
    assert stats["binance:BTC-USDT:5m"].bars == 20
    assert stats["coinbase:BTC-USD:5m"].last == T0 + timedelta(minutes=20)


def _forecast(issued: datetime, model: str = "m1", base: float = 100.0) -> Forecast:
    return Forecast(
        series=S, issued_at=issued, model_id=model,
        target_times=tuple(issued + timedelta(minutes=5 * (k + 1)) for k in range(16)),
        closes=tuple(base + k for k in range(16)), last_close=D("99.5"), latency_ms=3.0,
    )


def test_forecasts_written_once_and_queried_newest_first(any_db: Database) -> None:
    registry.register_model(any_db, ModelInfo("m1", "lstm", (S,), None, None, {}, {}, None))
    f1, f2 = _forecast(T0), _forecast(T0 + timedelta(minutes=5))
    assert insert_forecasts(any_db, [f1, f2]) == 32
    assert insert_forecasts(any_db, [f1, dataclasses.replace(f2, closes=(0.0,) * 16)]) == 0
    got = query_forecasts(any_db, S)
    assert [f.issued_at for f in got] == [f2.issued_at, f1.issued_at]
    assert got[0].closes == f2.closes  # the first write stands
    latest = latest_forecast(any_db, S)
    assert latest is not None and latest.issued_at == f2.issued_at and latest.last_close == D("99.5")
    assert [f.issued_at for f in query_forecasts(any_db, S, since=T0, until=T0 + timedelta(minutes=5))] == [T0]
    assert query_forecasts(any_db, S, model_id="other") == []


def test_registry_promotion_keeps_history(any_db: Database) -> None:
    for mid in ("a", "b"):
        registry.register_model(any_db, ModelInfo(mid, "gru", (S,), T0, T0, {"units": 8}, {"mae": 1.0}, f"/x/{mid}"))
    assert registry.champion(any_db, S) is None
    registry.promote(any_db, "a", S, reason="first")
    registry.promote(any_db, "b", S, reason="better")
    champ = registry.champion(any_db, S)
    assert champ is not None and champ.id == "b" and champ.status == "champion"
    assert registry.get_model(any_db, "a").status == "retired"
    hist = registry.history(any_db, S)
    assert [h[0] for h in hist] == ["a", "b"] and hist[0][2] is not None and hist[1][2] is None
    assert [m.id for m in registry.list_models(any_db, status="retired")] == ["a"]
    with pytest.raises(InputError, match="no model with id 'zzz'"):
        registry.get_model(any_db, "zzz")


def test_re_registering_a_champion_updates_it_in_place(any_db: Database) -> None:
    """A delete and insert broke the foreign keys of its champion term (and lost its forecasts)."""
    registry.register_model(any_db, ModelInfo("m1", "lstm", (S,), None, None, {}, {"mae": 2.0}, "/x/old"))
    registry.promote(any_db, "m1", S, reason="first")
    insert_forecasts(any_db, [_forecast(T0)])
    created = registry.get_model(any_db, "m1").created_at
    registry.register_model(any_db, ModelInfo("m1", "lstm", (S,), T0, T0, {}, {"mae": 1.0}, "/x/new"))
    again = registry.get_model(any_db, "m1")
    assert (again.metrics, again.artifact_path, again.train_start) == ({"mae": 1.0}, "/x/new", T0)
    assert again.status == "champion" and again.created_at == created  # its place in the registry stays
    champ = registry.champion(any_db, S)
    assert champ is not None and champ.id == "m1"
    assert [f.model_id for f in query_forecasts(any_db, S)] == ["m1"]
    # a candidate takes the status it is given
    registry.register_model(any_db, ModelInfo("m2", "gru", (S,), None, None, {}, {}, None))
    registry.register_model(any_db, ModelInfo("m2", "gru", (S,), None, None, {}, {}, None, status="retired"))
    assert registry.get_model(any_db, "m2").status == "retired"


def test_lease_is_exclusive_until_expiry(any_db: Database) -> None:
    assert leases.acquire(any_db, "retrain:x", "daemon-1", timedelta(minutes=5))
    assert not leases.acquire(any_db, "retrain:x", "daemon-2", timedelta(minutes=5))
    assert leases.acquire(any_db, "retrain:x", "daemon-1", timedelta(minutes=5))  # renew
    leases.release(any_db, "retrain:x", "daemon-1")
    assert leases.acquire(any_db, "retrain:x", "daemon-2", timedelta(seconds=-1))  # taken, already expired
    assert leases.acquire(any_db, "retrain:x", "daemon-3", timedelta(minutes=5))
    held = leases.holder(any_db, "retrain:x")
    assert held is not None and held[0] == "daemon-3"


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_db: Database) -> None:
    """WAL: a reader (the API, the CLI) is never blocked by the daemon's open write transaction.

    The writer keeps its transaction open until the reader has finished; a reader that needed
    the writer's lock could not finish first (it would fail with "database is locked")."""
    import threading

    upsert_bars(tmp_db, make_bars(3))
    holding, reader_done = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def writer() -> None:
        with tmp_db.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO leases (name, owner, expires_at) VALUES ('x', 'y', '2030-01-01 00:00:00.000000')")
            holding.set()
            outcome["reader_finished_inside_write"] = reader_done.wait(60)

    t = threading.Thread(target=writer)
    t.start()
    assert holding.wait(60)
    got = read_bars(tmp_db, S)
    reader_done.set()
    t.join()
    assert len(got) == 3
    assert outcome["reader_finished_inside_write"] is True
    assert leases.holder(tmp_db, "x") is not None
