"""Stream positions of stored forecasts (`forecast_seq`): numbered as stored, read back after a
position in order, scoped to a series or an issuer, bounded; old forecasts numbered by the migration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.command import downgrade, upgrade
from sqlalchemy import text

from db import migrate
from db.engine import Database, open_database
from db.forecasts import query_forecasts, store_new_forecasts, stream_after
from db.records import Forecast, SeriesKey

A = SeriesKey("binance", "BTC-USDT")
B = SeriesKey("binance", "ETH-USDT")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _fc(key: SeriesKey, i: int, model: str = "m", by: str | None = None) -> Forecast:
    t = T0 + timedelta(minutes=5 * i)
    return Forecast(key, t, model, tuple(t + timedelta(minutes=5 * (k + 1)) for k in range(16)),
                    tuple(100.0 + i + k for k in range(16)), issued_by=by)


def test_positions_grow_across_batches_and_read_back_in_order(any_db: Database) -> None:
    # 30 forecasts x 16 steps in one batch: PostgreSQL's COPY path numbers them; small batches the other
    first = store_new_forecasts(any_db, [_fc(k, i) for i in range(15) for k in (A, B)])
    second = store_new_forecasts(any_db, [_fc(A, 15)])
    third = store_new_forecasts(any_db, [_fc(B, 15), _fc(A, 16, "other")])
    seqs = [f.seq for f in first + second + third]
    assert None not in seqs
    known = [s for s in seqs if s is not None]
    assert known == sorted(known) and len(set(known)) == 33
    assert max(known[: len(first)]) < known[len(first)] < min(known[len(first) + len(second) :])
    assert store_new_forecasts(any_db, [_fc(A, 15)]) == []  # stored before: no second position

    page = stream_after(any_db, 0, limit=1000)
    assert [f.seq for f in page.forecasts] == seqs and page.top == seqs[-1] and page.skipped == 0  # type: ignore[index]
    assert page.forecasts == first + second + third  # the same records, steps and all
    stored = {(f.series, f.issued_at, f.model_id): f for f in query_forecasts(any_db)}
    assert all(stored[(f.series, f.issued_at, f.model_id)] == f for f in page.forecasts)

    after = second[0].seq
    assert after is not None
    assert stream_after(any_db, after, limit=10).forecasts == third
    only_b = stream_after(any_db, 0, series=B, limit=1000).forecasts
    assert [f.series for f in only_b] == [B] * 16 and [f.seq for f in only_b] == sorted(f.seq or 0 for f in only_b)
    assert stream_after(any_db, seqs[-1], limit=10).forecasts == []  # type: ignore[arg-type]


def test_the_bound_keeps_the_newest_and_counts_the_rest(any_db: Database) -> None:
    stored = store_new_forecasts(any_db, [_fc(A, i) for i in range(12)])
    page = stream_after(any_db, stored[1].seq or 0, limit=4)
    assert page.forecasts == stored[-4:] and page.skipped == 6 and page.top == stored[-1].seq
    assert stream_after(any_db, stored[7].seq or 0, limit=4).skipped == 0


def test_an_issuer_replays_only_its_own(any_db: Database) -> None:
    mine = store_new_forecasts(any_db, [_fc(A, 0, by="d1"), _fc(A, 1, by="d1")])
    theirs = store_new_forecasts(any_db, [_fc(B, 0, by="d2")])
    later = store_new_forecasts(any_db, [_fc(A, 2, by="d1")])
    page = stream_after(any_db, 0, issued_by="d1", limit=100)
    assert page.forecasts == mine + later and page.top == later[0].seq
    assert stream_after(any_db, 0, issued_by="d2", limit=100).forecasts == theirs


def test_the_migration_numbers_forecasts_stored_before_it(any_db_url: str) -> None:
    db = open_database(any_db_url)
    old = [_fc(A, 2), _fc(B, 0), _fc(A, 1)]
    for f in old:  # created one after another
        store_new_forecasts(db, [f])
    with db.engine.begin() as conn:
        downgrade(migrate._alembic_config(conn), "0009")
    with db.engine.begin() as conn:
        upgrade(migrate._alembic_config(conn), "head")
        n = conn.execute(text("SELECT count(*) FROM forecast_seq")).scalar_one()
    assert n == 3
    page = stream_after(db, 0, limit=10)
    assert [(f.series, f.issued_at) for f in page.forecasts] == [(f.series, f.issued_at) for f in old]
    new = store_new_forecasts(db, [_fc(B, 5)])
    assert (new[0].seq or 0) > page.top
    db.close()


def test_a_forecast_deleted_by_hand_is_stored_again_as_the_newest(any_db: Database) -> None:
    """Forecast rows deleted without their stream positions (by hand; a bench that truncated
    `forecasts` only) made storing them again fail on the old position for good (a unique
    violation, retried by the writer). They are renumbered as the newest instead, on both
    paths (one forecast; a batch above PostgreSQL's COPY threshold)."""
    few = [_fc(A, 0)]
    many = [_fc(k, i) for i in range(1, 16) for k in (A, B)]  # 480 step rows: COPY on PostgreSQL
    first = store_new_forecasts(any_db, few + many)
    top = max(f.seq or 0 for f in first)
    with any_db.engine.begin() as conn:
        conn.execute(text("DELETE FROM forecasts"))
    again = store_new_forecasts(any_db, few)
    assert len(again) == 1 and (again[0].seq or 0) > top  # PostgreSQL may skip numbers, never reuse them
    more = store_new_forecasts(any_db, many)
    assert len(more) == len(many) and min(f.seq or 0 for f in more) > (again[0].seq or 0)
    page = stream_after(any_db, top, limit=1000)
    assert [(f.series, f.issued_at) for f in page.forecasts] == [(f.series, f.issued_at) for f in again + more]
    with any_db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM forecast_seq")).scalar_one() == 1 + len(many)
