"""Fenced series leases on both engines: claims only when free, tokens grow at every change of
owner, a stale writer's rows are refused, a clean leave hands everything on at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from db import cluster
from db.bars import read_bars, upsert_bars
from db.cluster import Fence, Instance
from db.engine import Database
from db.forecasts import query_forecasts, store_new_forecasts
from db.records import Bar, Forecast, SeriesKey

A = SeriesKey("binance", "BTC-USDT")
B = SeriesKey("binance", "ETH-USDT")
T0 = datetime(2021, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=60)


def _inst(name: str) -> Instance:
    now = datetime.now(UTC)
    return Instance(name, "host", 1, now, now, now, {})


def _bar(key: SeriesKey, i: int) -> Bar:
    from decimal import Decimal as D

    return Bar(key.exchange, key.symbol, key.interval, T0 + timedelta(minutes=5 * i), D("1"), D("2"), D("1"),
               D("1.5"), D("3"))


def test_claims_tokens_and_fencing(any_db: Database) -> None:
    assert [i.id for i in cluster.heartbeat(any_db, _inst("d1"), TTL)] == ["d1"]
    assert [i.id for i in cluster.heartbeat(any_db, _inst("d2"), TTL)] == ["d1", "d2"]
    won = cluster.claim(any_db, "d1", [A, B], TTL)
    assert won == {A: 1, B: 1}
    assert cluster.claim(any_db, "d2", [A, B], TTL) == {}  # held and unexpired: not taken
    d1 = Fence("d1", won)
    assert cluster.renew(any_db, d1, TTL) == won
    # d1 hands B on (rebalancing); d2 takes it with a higher token
    cluster.release(any_db, d1, [B])
    d1 = Fence("d1", {A: 1})
    assert cluster.claim(any_db, "d2", [B], TTL) == {B: 2}
    d2 = Fence("d2", {B: 2})
    # a stale writer (d1 still thinking it owns B) is refused, the owner is not
    assert upsert_bars(any_db, [_bar(A, 0), _bar(B, 0)], fence=Fence("d1", {A: 1, B: 1})) == 1
    assert read_bars(any_db, B) == []
    assert upsert_bars(any_db, [_bar(B, 0)], fence=d2) == 1
    f = Forecast(B, T0, "persistence", (T0 + timedelta(minutes=5),), (1.5,))
    assert store_new_forecasts(any_db, [f], fence=Fence("d1", {B: 1})) == []
    stored = store_new_forecasts(any_db, [f], fence=d2)
    assert [s.issued_by for s in stored] == ["d2"]
    assert [g.issued_by for g in query_forecasts(any_db, B)] == ["d2"]
    # an expired lease is taken over; its old holder's renewal then loses it
    short = timedelta(milliseconds=50)
    cluster.renew(any_db, d1, short)
    time.sleep(0.1)
    assert cluster.claim(any_db, "d2", [A], TTL) == {A: 2}
    assert cluster.renew(any_db, d1, TTL) == {}
    # a clean leave releases everything at once (token kept, so the next owner's is higher)
    cluster.leave(any_db, "d2")
    leases = cluster.series_leases(any_db)
    assert {k: (lease.owner, lease.token) for k, lease in leases.items()} == {A: ("", 2), B: ("", 2)}
    assert cluster.claim(any_db, "d1", [A, B], TTL) == {A: 3, B: 3}
    # solo mode takes leases whoever holds them
    assert cluster.claim(any_db, "d3", [A], TTL, force=True) == {A: 4}


def _model(db: Database, model_id: str, keys: tuple[SeriesKey, ...]) -> None:
    from db import registry
    from db.records import ModelInfo

    registry.register_model(db, ModelInfo(model_id, "linear", keys, None, None, {}, {}, None))


def test_a_promotion_is_fenced_in_its_own_transaction(any_db: Database) -> None:
    import pytest

    from db import registry
    from db.errors import FencedOut

    cluster.heartbeat(any_db, _inst("d1"), TTL)
    won = cluster.claim(any_db, "d1", [A, B], TTL)
    _model(any_db, "m1", (A, B))
    _model(any_db, "m2", (A, B))
    registry.promote(any_db, "m1", [A, B], fence=Fence("d1", won))
    assert registry.champions(any_db, [A, B]) == {A: "m1", B: "m1"}
    # d1's lease of A moves on (released, then claimed by d2): d1's next promotion is refused whole
    cluster.release(any_db, Fence("d1", won), [A])
    assert cluster.claim(any_db, "d2", [A], TTL) == {A: 2}
    with pytest.raises(FencedOut, match="lease of binance:BTC-USDT"):
        registry.promote(any_db, "m2", [A, B], fence=Fence("d1", won))
    assert registry.champions(any_db, [A, B]) == {A: "m1", B: "m1"}
    assert cluster.REJECTED.rejected.get("promotions", 0) >= 1
    registry.promote(any_db, "m2", [A, B], fence=Fence("d2", {A: 2}))  # the owner's goes through
    assert registry.champions(any_db, [A, B]) == {A: "m2", B: "m2"}

