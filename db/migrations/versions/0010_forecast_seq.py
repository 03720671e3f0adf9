"""forecast stream positions: one numbered row per forecast (the `id:` of /forecasts/stream)

Revision ID: 0010
Revises: 0009

Forecasts stored before get positions in the order they were created, below every new one.
"""

import sqlalchemy as sa
from alembic import op

from db.types import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forecast_seq",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("issued_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_forecast_seq"),
        sa.UniqueConstraint("exchange", "symbol", "interval", "issued_at", "model_id",
                            name="uq_forecast_seq_exchange_symbol_interval_issued_at_model_id"),
    )
    op.create_index("ix_forecast_seq_series", "forecast_seq", ["exchange", "symbol", "interval", "seq"])
    op.create_index("ix_forecast_seq_issued_by", "forecast_seq", ["issued_by", "seq"])
    cols = '"exchange", "symbol", "interval", "issued_at", "model_id"'
    op.execute(
        f'INSERT INTO forecast_seq ({cols}, "issued_by") SELECT {cols}, "issued_by" FROM forecasts '
        f'WHERE "step" = 1 ORDER BY "created_at", {cols}'
    )


def downgrade() -> None:
    op.drop_index("ix_forecast_seq_issued_by", table_name="forecast_seq")
    op.drop_index("ix_forecast_seq_series", table_name="forecast_seq")
    op.drop_table("forecast_seq")
