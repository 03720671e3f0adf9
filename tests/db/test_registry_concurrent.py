"""Champion changes from several connections at once, on both engines. Daemons that start
together on a fresh database each make sure the persistence baseline is registered and champion
of their series; promotions (a daemon's challenger, an operator's `models promote`) can meet.
Whichever way the transactions interleave: no error, the baseline registered once, and exactly
one open champion term per series."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from sqlalchemy import func, select

from db import registry
from db.engine import Database, open_database
from db.records import ModelInfo, SeriesKey
from db.schema import champion_history, models
from trainer.retrain_job import BASELINE_ID, ensure_baseline

SERIES = [SeriesKey("binance", f"C{i:03d}-USDT") for i in range(6)]
DAEMONS = 4
ROUNDS = 5


def _together(url: str, calls: Sequence[Callable[[Database], object]]) -> list[BaseException]:
    """Each call on its own connection (one engine each, as separate daemons), all released at
    once; the exceptions they raised."""
    bases = [open_database(url) for _ in calls]
    gate = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(database: Database, call: Callable[[Database], object]) -> None:
        gate.wait()
        try:
            call(database)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(bases, calls, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for b in bases:
        b.close()
    return errors


def _open_terms(database: Database) -> list[tuple[str, int]]:
    with database.engine.connect() as conn:
        rows = conn.execute(
            select(champion_history.c.symbol, func.count())
            .where(champion_history.c.ended_at.is_(None))
            .group_by(champion_history.c.symbol)
        ).all()
    return sorted((r[0], r[1]) for r in rows)


def _reset(database: Database) -> None:
    with database.begin() as conn:
        conn.execute(champion_history.delete())
        conn.execute(models.delete())


def test_daemons_starting_together_register_the_baseline_once(any_db_url: str) -> None:
    database = open_database(any_db_url)
    try:
        for _ in range(ROUNDS):
            _reset(database)
            assert _together(any_db_url, [lambda db: ensure_baseline(db, SERIES)] * DAEMONS) == []
            with database.engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(models)).scalar_one() == 1
            assert _open_terms(database) == [(s.symbol, 1) for s in SERIES]
            assert registry.champions(database, SERIES) == dict.fromkeys(SERIES, BASELINE_ID)
        # a later start changes nothing where a trained model has taken over
        registry.register_model(database, ModelInfo("m1", "linear", (SERIES[0],), None, None, {}, {}, None))
        registry.promote(database, "m1", SERIES[0])
        ensure_baseline(database, SERIES)
        assert registry.champions(database, SERIES) == {**dict.fromkeys(SERIES, BASELINE_ID), SERIES[0]: "m1"}
    finally:
        database.close()


def test_concurrent_promotions_leave_one_champion_term_per_series(any_db_url: str) -> None:
    """An operator's `models promote` while a daemon promotes its challenger (or two of either):
    whichever commits last is champion, and the series never has two open terms."""
    database = open_database(any_db_url)
    try:
        ids = [f"m{i}" for i in range(DAEMONS)]
        for m in ids:
            registry.register_model(database, ModelInfo(m, "linear", tuple(SERIES), None, None, {}, {}, None))
        for _ in range(ROUNDS):
            calls = [lambda db, m=m: registry.promote(db, m, SERIES) for m in ids]
            assert _together(any_db_url, calls) == []
            assert _open_terms(database) == [(s.symbol, 1) for s in SERIES]
            winners = set(registry.champions(database, SERIES).values())
            assert len(winners) == 1  # one promotion's group, all its series together
            statuses = {m.id: m.status for m in registry.list_models(database)}
            assert [m for m in ids if statuses[m] == "champion"] == sorted(winners)
    finally:
        database.close()
