"""index champion terms by model (the foreign key retention checks on each model it deletes)

Revision ID: 0011
Revises: 0010

Deleting a model row checks `champion_history` for a term referring to it (the foreign key, and
retention's own "no term keeps it"): without this index each deleted model was a scan of every
term, on SQLite while holding the write lock.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_champion_history_model", "champion_history", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_champion_history_model", table_name="champion_history")
