"""climatology's pinball loss beside each probabilistic score (live probabilistic skill)

Revision ID: 0006
Revises: 0005

Scores written before keep NULL (they are left out of probabilistic skill, nothing else).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("forecast_scores", sa.Column("climatology_pinball", sa.Float(53), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("forecast_scores") as batch:
        batch.drop_column("climatology_pinball")
