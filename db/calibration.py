"""Persisted online-calibration state, one JSON document per (series, model).

Written by the daemon's single DB writer in the same transaction as the scores that moved it
(db.scores.insert_scores), so the stored state always matches the stored scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from db.dialect import insert_for
from db.engine import Database
from db.records import CalibrationState, SeriesKey
from db.schema import calibration as cal_t


def save_states(database: Database, conn: Connection, states: Iterable[CalibrationState]) -> None:
    """Upsert `states` on an open transaction `conn`."""
    rows: list[dict[str, Any]] = [
        {
            "exchange": s.series.exchange, "symbol": s.series.symbol, "interval": s.series.interval,
            "model_id": s.model_id, "state": s.state, "updated_at": s.updated_at,
        }
        for s in states
    ]
    if not rows:
        return
    stmt = insert_for(database, cal_t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["exchange", "symbol", "interval", "model_id"],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
    )
    conn.execute(stmt, rows)


def store_states(database: Database, states: Iterable[CalibrationState]) -> None:
    with database.begin() as conn:
        save_states(database, conn, states)


def load_states(database: Database, series: Iterable[SeriesKey] | None = None) -> list[CalibrationState]:
    """Every stored state (or those of `series`)."""
    wanted = None if series is None else set(series)
    with database.engine.connect() as conn:
        rows = conn.execute(select(cal_t)).all()
    out = [
        CalibrationState(SeriesKey(r.exchange, r.symbol, r.interval), r.model_id, dict(r.state), r.updated_at)
        for r in rows
    ]
    return [s for s in out if wanted is None or s.series in wanted]
