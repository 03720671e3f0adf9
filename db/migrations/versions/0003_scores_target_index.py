"""index forecast scores by series and target time (live accuracy windows)

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_forecast_scores_series_target", "forecast_scores", ["exchange", "symbol", "interval", "target_time"]
    )


def downgrade() -> None:
    op.drop_index("ix_forecast_scores_series_target", table_name="forecast_scores")
