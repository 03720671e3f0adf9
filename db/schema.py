"""The only place that knows tables and indexes. Changing a table here needs a migration
in `db/migrations/versions/` (the test suite compares the two and fails on any drift).

Money columns use `ExactDecimal` (NUMERIC on PostgreSQL, decimal text on SQLite); predicted
values are doubles (they come out of a model). Times are `UtcDateTime`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Float,
    ForeignKeyConstraint,
    FromClause,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    text,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles

from db.records import SeriesKey
from db.types import ExactDecimal, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def series_is(table: FromClause, series: SeriesKey) -> ColumnElement[bool]:
    """The one predicate for "rows of this series" on any table (or alias) with the series columns."""
    return and_(
        table.c.exchange == series.exchange,
        table.c.symbol == series.symbol,
        table.c.interval == series.interval,
    )


#: Above this many series, PostgreSQL gets the hashed form of `series_in` (see there).
HASHED_SERIES_IN = 32


def series_in(table: Table, keys: list[SeriesKey]) -> ColumnElement[bool]:
    """Rows of any of these series (one condition, so a set-based pass is one query). A tuple IN;
    PostgreSQL expands a long row-value IN into an OR evaluated per row (1,000 series: 1,000
    comparisons a row), so there, above HASHED_SERIES_IN series, it is `symbol IN (...)` (index
    friendly) AND `exchange:symbol:interval IN (...)` (exact), both hashed scalar IN lists."""
    tuples = tuple_(table.c.exchange, table.c.symbol, table.c.interval).in_(
        [(k.exchange, k.symbol, k.interval) for k in keys]
    )
    if len(keys) <= HASHED_SERIES_IN:
        return tuples
    return _SeriesIn(tuples, and_(
        table.c.symbol.in_(sorted({k.symbol for k in keys})),
        (table.c.exchange + ":" + table.c.symbol + ":" + table.c.interval).in_([str(k) for k in keys]),
    ))


class _SeriesIn(ColumnElement[bool]):
    """`series_in`'s condition: the tuple form, or the hashed one on PostgreSQL."""

    inherit_cache = True

    def __init__(self, tuples: ColumnElement[bool], hashed: ColumnElement[bool]) -> None:
        self.tuples = tuples
        self.hashed = hashed
        self.type = Boolean()


@compiles(_SeriesIn)
def _series_in_default(element: _SeriesIn, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.tuples, **kw))


@compiles(_SeriesIn, "postgresql")
def _series_in_pg(element: _SeriesIn, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.hashed, **kw))


def _series_columns() -> list[Column[str]]:
    return [
        Column("exchange", String(32), primary_key=True),
        Column("symbol", String(32), primary_key=True),
        Column("interval", String(8), primary_key=True),
    ]


bars = Table(
    "bars",
    metadata,
    *_series_columns(),
    Column("open_time", UtcDateTime(), primary_key=True),
    Column("open", ExactDecimal(), nullable=False),
    Column("high", ExactDecimal(), nullable=False),
    Column("low", ExactDecimal(), nullable=False),
    Column("close", ExactDecimal(), nullable=False),
    Column("volume", ExactDecimal(), nullable=False),
    Column("trade_count", Integer(), nullable=True),
    Column("source", String(16), nullable=False, server_default="live"),
    Column("updated_at", UtcDateTime(), nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("arch", String(32), nullable=False),
    Column("series", JSON(), nullable=False),  # list of "exchange:symbol:interval"
    Column("train_start", UtcDateTime(), nullable=True),
    Column("train_end", UtcDateTime(), nullable=True),
    Column("params", JSON(), nullable=False),
    Column("metrics", JSON(), nullable=False),
    Column("artifact_path", Text(), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index(None, "status"),
)

forecasts = Table(
    "forecasts",
    metadata,
    *_series_columns(),
    Column("issued_at", UtcDateTime(), primary_key=True),  # open time of the last bar the model saw
    Column("model_id", String(128), primary_key=True),
    Column("step", Integer(), primary_key=True),  # 1..horizon
    Column("target_time", UtcDateTime(), nullable=False),
    Column("predicted", Float(53), nullable=False),
    Column("lower", Float(53), nullable=True),
    Column("upper", Float(53), nullable=True),
    Column("last_close", ExactDecimal(), nullable=True),
    Column("latency_ms", Float(53), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("issued_by", String(200), nullable=True),  # the daemon instance that issued it
    # served (calibrated) quantiles of this step at `levels`, ascending; NULL on point-only rows
    Column("levels", JSON(), nullable=True),
    Column("quantiles", JSON(), nullable=True),
    Index("ix_forecasts_issued_at", "issued_at"),
    Index("ix_forecasts_series_target", "exchange", "symbol", "interval", "target_time"),
)

# The forecast stream's positions (`id:` of /forecasts/stream): one row per forecast, numbered in
# the order the forecasts were stored. A daemon stores its forecasts from one writer thread, one
# transaction after another, so its own forecasts are numbered in commit order; `issued_by` lets a
# daemon sharing the database replay exactly the forecasts its stream carried.
forecast_seq = Table(
    "forecast_seq",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("interval", String(8), nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("issued_by", String(200), nullable=True),
    UniqueConstraint("exchange", "symbol", "interval", "issued_at", "model_id"),
    Index("ix_forecast_seq_series", "exchange", "symbol", "interval", "seq"),
    Index("ix_forecast_seq_issued_by", "issued_by", "seq"),
)

forecast_scores = Table(
    "forecast_scores",
    metadata,
    *_series_columns(),
    Column("issued_at", UtcDateTime(), primary_key=True),
    Column("model_id", String(128), primary_key=True),
    Column("step", Integer(), primary_key=True),
    Column("target_time", UtcDateTime(), nullable=False),
    Column("actual", ExactDecimal(), nullable=False),
    Column("error", Float(53), nullable=False),  # predicted - actual
    Column("persistence_error", Float(53), nullable=False),  # last_close - actual
    Column("scored_at", UtcDateTime(), nullable=False),
    # probabilistic scores, NULL where the forecast had no quantiles:
    Column("pinball", JSON(), nullable=True),  # {"0.1": loss, ...} per level
    Column("pinball_mean", Float(53), nullable=True),  # mean over the levels (WIS = 2x)
    Column("inside", Boolean(), nullable=True),  # actual within [lowest, highest] quantile
    Column("width", Float(53), nullable=True),  # highest - lowest quantile
    # climatology's mean pinball on the same bar (the reference of probabilistic skill)
    Column("climatology_pinball", Float(53), nullable=True),
    ForeignKeyConstraint(
        ["exchange", "symbol", "interval", "issued_at", "model_id", "step"],
        [
            "forecasts.exchange",
            "forecasts.symbol",
            "forecasts.interval",
            "forecasts.issued_at",
            "forecasts.model_id",
            "forecasts.step",
        ],
        ondelete="CASCADE",
    ),
    Index("ix_forecast_scores_scored_at", "scored_at"),
    # live accuracy windows: scores of one series by target bar time
    Index("ix_forecast_scores_series_target", "exchange", "symbol", "interval", "target_time"),
)

champion_history = Table(
    "champion_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("interval", String(8), nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("reason", Text(), nullable=True),
    ForeignKeyConstraint(["model_id"], ["models.id"]),
    Index("ix_champion_history_series", "exchange", "symbol", "interval", "ended_at"),
    # a deleted model's foreign-key check and retention's "no term keeps it" (migration 0011)
    Index("ix_champion_history_model", "model_id"),
    # one open term (the champion) per series, enforced (migration 0009 repaired older databases)
    Index("uq_champion_history_open", "exchange", "symbol", "interval", unique=True,
          sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL")),
)

feed_gaps = Table(
    "feed_gaps",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("interval", String(8), nullable=False),
    Column("gap_start", UtcDateTime(), nullable=False),
    Column("gap_end", UtcDateTime(), nullable=False),
    Column("detected_at", UtcDateTime(), nullable=False),
    Column("bars_filled", Integer(), nullable=False, server_default="0"),
    Column("filled_at", UtcDateTime(), nullable=True),
    Index("ix_feed_gaps_series", "exchange", "symbol", "interval", "gap_start"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("heartbeat_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),  # heartbeat_at + lease TTL: alive until then
    Column("info", JSON(), nullable=False),  # API URL, version: for `status` of the cluster
)

# Who owns a series: one row per series, taken over only when expired or released. `token` grows
# by one at every change of owner (the fencing token every write of the series carries).
series_leases = Table(
    "series_leases",
    metadata,
    *_series_columns(),
    Column("owner", String(200), nullable=False),  # "" once released
    Column("token", BigInteger(), nullable=False),
    Column("acquired_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# Retraining as jobs: queued by a schedule, a first model, a manual request; claimed with
# SELECT ... FOR UPDATE SKIP LOCKED by the daemon owning the group's first series, under a
# per-daemon and a global cap; a running job's lease is renewed, an expired one is claimable
# again. `active_group` is the group while queued or running (NULL after), so a group has at
# most one live job (a unique column; NULLs never collide).
training_jobs = Table(
    "training_jobs",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("model_group", String(200), nullable=False),
    Column("active_group", String(200), nullable=True, unique=True),
    Column("series", String(80), nullable=False),  # the group's first series, whose owner trains it
    Column("reason", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # queued, running, done, failed
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("not_before", UtcDateTime(), nullable=False),  # retry backoff
    Column("claimed_by", String(200), nullable=True),
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("error", Text(), nullable=True),
    Column("outcome", JSON(), nullable=True),
    Index("ix_training_jobs_status", "status", "not_before"),
)

# Model artifact files in the database (PostgreSQL): any daemon on any machine loads any model.
# `models.artifact_path` is then "db:<model id>"; SQLite keeps artifacts in a local directory.
model_artifacts = Table(
    "model_artifacts",
    metadata,
    Column("model_id", String(128), primary_key=True),
    Column("name", String(200), primary_key=True),  # file name inside the artifact directory
    Column("data", LargeBinary(), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

calibration = Table(
    "calibration",
    metadata,
    # online conformal calibration state of one (series, model), so a restart keeps it
    *_series_columns(),
    Column("model_id", String(128), primary_key=True),
    Column("state", JSON(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
