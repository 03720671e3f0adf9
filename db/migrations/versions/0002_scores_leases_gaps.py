"""forecast scores, champion history, feed gaps, leases

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from db.types import ExactDecimal, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "forecast_scores",
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("target_time", UtcDateTime(), nullable=False),
        sa.Column("actual", ExactDecimal(), nullable=False),
        sa.Column("error", sa.Float(53), nullable=False),
        sa.Column("persistence_error", sa.Float(53), nullable=False),
        sa.Column("scored_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["exchange", "symbol", "interval", "issued_at", "model_id", "step"],
            [
                "forecasts.exchange",
                "forecasts.symbol",
                "forecasts.interval",
                "forecasts.issued_at",
                "forecasts.model_id",
                "forecasts.step",
            ],
            name="fk_forecast_scores_exchange_forecasts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "interval", "issued_at", "model_id", "step", name="pk_forecast_scores"
        ),
    )
    op.create_index("ix_forecast_scores_scored_at", "forecast_scores", ["scored_at"])
    op.create_table(
        "champion_history",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_champion_history_model_id_models"),
        sa.PrimaryKeyConstraint("id", name="pk_champion_history"),
    )
    op.create_index(
        "ix_champion_history_series", "champion_history", ["exchange", "symbol", "interval", "ended_at"]
    )
    op.create_table(
        "feed_gaps",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("gap_start", UtcDateTime(), nullable=False),
        sa.Column("gap_end", UtcDateTime(), nullable=False),
        sa.Column("detected_at", UtcDateTime(), nullable=False),
        sa.Column("bars_filled", sa.Integer(), server_default="0", nullable=False),
        sa.Column("filled_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_feed_gaps"),
    )
    op.create_index("ix_feed_gaps_series", "feed_gaps", ["exchange", "symbol", "interval", "gap_start"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("feed_gaps")
    op.drop_table("champion_history")
    op.drop_table("forecast_scores")
