"""Daemons that start together on one fresh database each make sure the persistence baseline is
registered and champion of their series: whichever way their transactions interleave, every
daemon starts, the baseline is registered once, and each series has exactly one champion term."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from db import registry
from db.engine import Database, open_database
from db.records import ModelInfo, SeriesKey
from db.schema import champion_history, models
from trainer.retrain_job import BASELINE_ID, ensure_baseline

SERIES = [SeriesKey("binance", f"C{i:03d}-USDT") for i in range(6)]
DAEMONS = 4
ROUNDS = 5


def _start_together(url: str) -> list[BaseException]:
    """`ensure_baseline` from DAEMONS connections (one engine each, as separate daemons) at once."""
    bases = [open_database(url) for _ in range(DAEMONS)]
    gate = threading.Barrier(DAEMONS)
    errors: list[BaseException] = []

    def daemon(database: Database) -> None:
        gate.wait()
        try:
            ensure_baseline(database, SERIES)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=daemon, args=(b,)) for b in bases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for b in bases:
        b.close()
    return errors


def _reset(database: Database) -> None:
    with database.begin() as conn:
        conn.execute(champion_history.delete())
        conn.execute(models.delete())


def test_daemons_starting_together_register_the_baseline_once(any_db_url: str) -> None:
    database = open_database(any_db_url)
    try:
        for _ in range(ROUNDS):
            _reset(database)
            assert _start_together(any_db_url) == []
            with database.engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(models)).scalar_one() == 1
                open_terms = conn.execute(
                    select(champion_history.c.symbol, func.count())
                    .where(champion_history.c.ended_at.is_(None))
                    .group_by(champion_history.c.symbol)
                ).all()
            assert sorted(open_terms) == [(s.symbol, 1) for s in SERIES], open_terms
            assert registry.champions(database, SERIES) == dict.fromkeys(SERIES, BASELINE_ID)
        # a later start changes nothing where a trained model has taken over
        registry.register_model(database, ModelInfo("m1", "linear", (SERIES[0],), None, None, {}, {}, None))
        registry.promote(database, "m1", SERIES[0])
        ensure_baseline(database, SERIES)
        assert registry.champions(database, SERIES) == {**dict.fromkeys(SERIES, BASELINE_ID), SERIES[0]: "m1"}
    finally:
        database.close()
