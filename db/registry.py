"""Model registry: who was trained on what, how good it is, and who is champion of each series."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, case, select, text, update

from db.cluster import REJECTED, Fence, fenced
from db.dialect import insert_for
from db.engine import Database
from db.errors import FencedOut, InputError
from db.records import ModelInfo, ModelStatus, SeriesKey
from db.schema import champion_history, models, series_in, series_is

#: NOTIFY channel of promotions on PostgreSQL; the payload is the series ("exchange:SYMBOL:interval").
PROMOTIONS_CHANNEL = "barcast_promotions"

STATUSES: tuple[ModelStatus, ...] = ("candidate", "champion", "retired")
#: Key of the PostgreSQL advisory lock serialising every change of champion (`promote`,
#: `ensure_default`): each reads the open terms and replaces them, so two at once would each
#: leave a term open. SQLite needs none: `Database.begin` takes its write lock first.
CHAMPION_LOCK = 0x62617264  # "bard"


def _info(row: Any) -> ModelInfo:
    return ModelInfo(
        id=row.id,
        arch=row.arch,
        series=tuple(SeriesKey.parse(s) for s in row.series),
        train_start=row.train_start,
        train_end=row.train_end,
        params=dict(row.params),
        metrics=dict(row.metrics),
        artifact_path=row.artifact_path,
        status=row.status,
        created_at=row.created_at,
    )


def _row(info: ModelInfo) -> dict[str, Any]:
    if info.status not in STATUSES:
        raise InputError(f"bad model status {info.status!r}; valid: {', '.join(STATUSES)}")
    return {
        "id": info.id,
        "arch": info.arch,
        "series": [str(s) for s in info.series],
        "train_start": info.train_start,
        "train_end": info.train_end,
        "params": info.params,
        "metrics": info.metrics,
        "artifact_path": info.artifact_path,
        "status": info.status,
        "created_at": info.created_at,
    }


def register_model(database: Database, info: ModelInfo) -> None:
    """Add a model (as given; normally a candidate). Re-registering an id updates the row in
    place: what the model is (arch, series, metrics, artifact) is replaced, while its place in
    the registry stays - a champion or retired model keeps its status, and its champion terms
    and forecasts keep pointing at it (a delete and insert broke their foreign keys)."""
    row = _row(info)
    stmt = insert_for(database, models).values(**row)
    kept = {k: v for k, v in row.items() if k not in ("id", "created_at", "status")}
    # a candidate row takes the given status; a promoted or retired one keeps its own
    kept["status"] = case((models.c.status == "candidate", stmt.excluded.status), else_=models.c.status)
    with database.begin() as conn:
        conn.execute(stmt.on_conflict_do_update(index_elements=[models.c.id], set_=kept))


def ensure_default(database: Database, info: ModelInfo, series: Sequence[SeriesKey], *, reason: str) -> None:
    """Register `info` unless its id is registered, and make it champion of each of `series`
    that has none - in one transaction, so daemons starting together on a fresh database do it
    once between them: never a failed start on the other's row, never two champion terms of one
    series (`CHAMPION_LOCK`)."""
    row = _row(info)
    with database.begin() as conn:
        lock_champions(conn)
        if conn.execute(select(models.c.id).where(models.c.id == info.id)).first() is None:
            conn.execute(models.insert().values(**row))
        now = datetime.now(UTC)
        for key in series:
            term = conn.execute(select(champion_history.c.id).where(
                and_(series_is(champion_history, key), champion_history.c.ended_at.is_(None)))).first()
            if term is None:
                _promote_one(conn, info.id, key, now, reason)


def get_model(database: Database, model_id: str) -> ModelInfo:
    with database.engine.connect() as conn:
        row = conn.execute(select(models).where(models.c.id == model_id)).first()
    if row is None:
        raise InputError(f"no model with id {model_id!r} in the registry (see `barcast models list`)")
    return _info(row)


def list_models(
    database: Database, *, series: SeriesKey | None = None, status: ModelStatus | None = None
) -> list[ModelInfo]:
    """Models newest first, optionally only those trained on `series` and/or with `status`."""
    stmt = select(models).order_by(models.c.created_at.desc(), models.c.id)
    if status is not None:
        stmt = stmt.where(models.c.status == status)
    with database.engine.connect() as conn:
        found = [_info(r) for r in conn.execute(stmt)]
    if series is not None:
        found = [m for m in found if series in m.series]
    return found


def update_metrics(database: Database, model_id: str, metrics: dict[str, Any]) -> None:
    get_model(database, model_id)
    with database.begin() as conn:
        conn.execute(update(models).where(models.c.id == model_id).values(metrics=metrics))


def set_artifact_path(database: Database, model_id: str, artifact_path: str) -> None:
    """Where the model's artifact lives now (`barcast db copy` moving it between a directory and
    the database)."""
    with database.begin() as conn:
        conn.execute(update(models).where(models.c.id == model_id).values(artifact_path=artifact_path))


def set_status(database: Database, model_id: str, status: ModelStatus) -> None:
    """Set a model's status. Retiring a champion also ends its champion terms."""
    if status not in STATUSES:
        raise InputError(f"bad model status {status!r}; valid: {', '.join(STATUSES)}")
    if status == "champion":
        info = get_model(database, model_id)
        for s in info.series:
            promote(database, model_id, s)
        return
    get_model(database, model_id)
    now = datetime.now(UTC)
    with database.begin() as conn:
        conn.execute(update(models).where(models.c.id == model_id).values(status=status))
        conn.execute(
            update(champion_history)
            .where(and_(champion_history.c.model_id == model_id, champion_history.c.ended_at.is_(None)))
            .values(ended_at=now)
        )


def retire(database: Database, model_id: str, *, fallback: str, reason: str) -> list[SeriesKey]:
    """Retire `model_id`; every series it is champion of gets the registered model `fallback` (the
    persistence baseline) as champion in the same transaction, so no series is left without a
    champion term and every daemon serving one reloads (NOTIFY, or its registry poll) instead of
    serving a retired model until its restart. Returns those series."""
    get_model(database, model_id)
    with database.begin() as conn:
        lock_champions(conn)
        held = [SeriesKey(r[0], r[1], r[2]) for r in conn.execute(
            select(champion_history.c.exchange, champion_history.c.symbol, champion_history.c.interval).where(
                and_(champion_history.c.model_id == model_id, champion_history.c.ended_at.is_(None))))]
        if held and model_id == fallback:
            raise InputError(f"{model_id} is the baseline that serves when no trained model does; it is champion "
                             f"of {', '.join(map(str, held))}: promote another model instead of retiring it")
        if held and conn.execute(select(models.c.id).where(models.c.id == fallback)).first() is None:
            raise InputError(f"cannot retire champion {model_id}: its fallback {fallback!r} is not registered")
        conn.execute(update(models).where(models.c.id == model_id).values(status="retired"))
        now = datetime.now(UTC)
        for key in held:
            _promote_one(conn, fallback, key, now, reason)
    return held


def promote(database: Database, model_id: str, series: SeriesKey | Sequence[SeriesKey], *,
            reason: str | None = None, fence: Fence | None = None, fence_on: SeriesKey | None = None) -> None:
    """Make `model_id` the champion of `series` (one, or a model group's) in one transaction.

    The previous champion's term ends; it is retired unless it is still champion of another series
    (a shared model). With `fence` (a daemon sharing the database), the lease of `fence_on` (default:
    the first series, whose champion decides a group's) must still carry the fence's token, checked
    in this same transaction: a daemon whose lease moved on raises `FencedOut` and changes nothing.
    On PostgreSQL the commit NOTIFYs `PROMOTIONS_CHANNEL` once per series, so every daemon serving
    one reloads it at once (the others poll the registry).
    """
    keys = [series] if isinstance(series, SeriesKey) else list(series)
    get_model(database, model_id)
    now = datetime.now(UTC)
    with database.begin() as conn:
        lock_champions(conn)
        if fence is not None:
            on = fence_on or keys[0]
            if on not in fenced(conn, fence, {on}, "promotions"):
                REJECTED.add("promotions", 1)
                raise FencedOut(f"promotion of {model_id} refused: the lease of {on} is no longer held by "
                                f"{fence.owner} with token {fence.tokens.get(on)}")
        for key in keys:
            _promote_one(conn, model_id, key, now, reason)


def lock_champions(conn: Connection) -> None:
    """`CHAMPION_LOCK` for the rest of this transaction (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAMPION_LOCK})


def _promote_one(conn: Connection, model_id: str, series: SeriesKey, now: datetime, reason: str | None) -> None:
    current = conn.execute(
        select(champion_history.c.id, champion_history.c.model_id).where(
            and_(series_is(champion_history, series), champion_history.c.ended_at.is_(None))
        )
    ).all()
    if any(r.model_id == model_id for r in current):
        return
    for r in current:
        conn.execute(update(champion_history).where(champion_history.c.id == r.id).values(ended_at=now))
        still = conn.execute(
            select(champion_history.c.id).where(
                and_(champion_history.c.model_id == r.model_id, champion_history.c.ended_at.is_(None))
            )
        ).first()
        if still is None:
            conn.execute(update(models).where(models.c.id == r.model_id).values(status="retired"))
    conn.execute(
        champion_history.insert().values(
            exchange=series.exchange,
            symbol=series.symbol,
            interval=series.interval,
            model_id=model_id,
            started_at=now,
            ended_at=None,
            reason=reason,
        )
    )
    conn.execute(update(models).where(models.c.id == model_id).values(status="champion"))
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                     {"channel": PROMOTIONS_CHANNEL, "payload": str(series)})


def champions(database: Database, series: Sequence[SeriesKey]) -> dict[SeriesKey, str]:
    """The champion model id of each of `series` that has one, in one query (the daemons poll it)."""
    if not series:
        return {}
    stmt = select(champion_history.c.exchange, champion_history.c.symbol, champion_history.c.interval,
                  champion_history.c.model_id).where(
        series_in(champion_history, list(series)), champion_history.c.ended_at.is_(None))
    with database.engine.connect() as conn:
        return {SeriesKey(r[0], r[1], r[2]): r[3] for r in conn.execute(stmt)}


def champion(database: Database, series: SeriesKey) -> ModelInfo | None:
    with database.engine.connect() as conn:
        row = conn.execute(
            select(champion_history.c.model_id)
            .where(and_(series_is(champion_history, series), champion_history.c.ended_at.is_(None)))
            .order_by(champion_history.c.started_at.desc())
        ).first()
    return get_model(database, row.model_id) if row else None


def champion_since(database: Database, series: SeriesKey) -> datetime | None:
    with database.engine.connect() as conn:
        row = conn.execute(
            select(champion_history.c.started_at).where(
                and_(series_is(champion_history, series), champion_history.c.ended_at.is_(None))
            )
        ).first()
    return row.started_at if row else None


def history(database: Database, series: SeriesKey) -> list[tuple[str, datetime, datetime | None, str | None]]:
    """Who was champion of `series` when: (model_id, started_at, ended_at, reason), oldest first."""
    with database.engine.connect() as conn:
        rows = conn.execute(
            select(
                champion_history.c.model_id,
                champion_history.c.started_at,
                champion_history.c.ended_at,
                champion_history.c.reason,
            )
            .where(series_is(champion_history, series))
            .order_by(champion_history.c.started_at, champion_history.c.id)
        ).all()
    return [(r.model_id, r.started_at, r.ended_at, r.reason) for r in rows]
