"""initial schema: bars, models, forecasts

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from db.types import ExactDecimal, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bars",
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("open_time", UtcDateTime(), nullable=False),
        sa.Column("open", ExactDecimal(), nullable=False),
        sa.Column("high", ExactDecimal(), nullable=False),
        sa.Column("low", ExactDecimal(), nullable=False),
        sa.Column("close", ExactDecimal(), nullable=False),
        sa.Column("volume", ExactDecimal(), nullable=False),
        sa.Column("trade_count", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(16), server_default="live", nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", "interval", "open_time", name="pk_bars"),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("arch", sa.String(32), nullable=False),
        sa.Column("series", sa.JSON(), nullable=False),
        sa.Column("train_start", UtcDateTime(), nullable=True),
        sa.Column("train_end", UtcDateTime(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
    )
    op.create_index("ix_models_status", "models", ["status"])
    op.create_table(
        "forecasts",
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("target_time", UtcDateTime(), nullable=False),
        sa.Column("predicted", sa.Float(53), nullable=False),
        sa.Column("lower", sa.Float(53), nullable=True),
        sa.Column("upper", sa.Float(53), nullable=True),
        sa.Column("last_close", ExactDecimal(), nullable=True),
        sa.Column("latency_ms", sa.Float(53), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "interval", "issued_at", "model_id", "step", name="pk_forecasts"
        ),
    )
    op.create_index("ix_forecasts_issued_at", "forecasts", ["issued_at"])
    op.create_index(
        "ix_forecasts_series_target", "forecasts", ["exchange", "symbol", "interval", "target_time"]
    )


def downgrade() -> None:
    op.drop_table("forecasts")
    op.drop_table("models")
    op.drop_table("bars")
