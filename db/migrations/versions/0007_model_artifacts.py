"""shared artifacts: model artifact files stored in the database

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from db.types import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_artifacts",
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "name", name="pk_model_artifacts"),
    )


def downgrade() -> None:
    op.drop_table("model_artifacts")
