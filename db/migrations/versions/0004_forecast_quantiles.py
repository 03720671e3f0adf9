"""forecast quantiles, probabilistic scores, persisted online calibration

Revision ID: 0004
Revises: 0003

Existing forecasts and scores keep NULL in the new columns (point-only rows still read).
"""

import sqlalchemy as sa
from alembic import op

from db.types import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("forecasts", sa.Column("levels", sa.JSON(), nullable=True))
    op.add_column("forecasts", sa.Column("quantiles", sa.JSON(), nullable=True))
    op.add_column("forecast_scores", sa.Column("pinball", sa.JSON(), nullable=True))
    op.add_column("forecast_scores", sa.Column("pinball_mean", sa.Float(53), nullable=True))
    op.add_column("forecast_scores", sa.Column("inside", sa.Boolean(), nullable=True))
    op.add_column("forecast_scores", sa.Column("width", sa.Float(53), nullable=True))
    op.create_table(
        "calibration",
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", "interval", "model_id", name="pk_calibration"),
    )


def downgrade() -> None:
    op.drop_table("calibration")
    with op.batch_alter_table("forecast_scores") as batch:
        for name in ("width", "inside", "pinball_mean", "pinball"):
            batch.drop_column(name)
    with op.batch_alter_table("forecasts") as batch:
        batch.drop_column("quantiles")
        batch.drop_column("levels")
