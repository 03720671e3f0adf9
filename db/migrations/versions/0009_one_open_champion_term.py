"""one open champion term per series, repaired and then enforced

Revision ID: 0009
Revises: 0008

Before the promotions were serialised (`registry.CHAMPION_LOCK`), concurrent promotions on
PostgreSQL could leave several open terms for one series, and the daemons then served whichever
row came first. The newest open term (latest start, then highest id) stays champion; the others
end when it started, and a model left with no open term and status champion becomes retired.
A partial unique index then refuses a second open term outright.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEX = "uq_champion_history_open"


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT id, exchange, symbol, interval, started_at FROM champion_history WHERE ended_at IS NULL "
            "ORDER BY exchange, symbol, interval, started_at DESC, id DESC"
        )
    ).all()
    kept: dict[tuple[str, str, str], object] = {}
    for row in rows:
        series = (row.exchange, row.symbol, row.interval)
        if series not in kept:
            kept[series] = row.started_at
            continue
        conn.execute(
            sa.text("UPDATE champion_history SET ended_at = :at, reason = COALESCE(reason, '') || :why WHERE id = :id"),
            {"at": kept[series], "id": row.id, "why": " [ended by migration 0009: a newer open term of the series]"},
        )
    conn.execute(
        sa.text(
            "UPDATE models SET status = 'retired' WHERE status = 'champion' AND id NOT IN "
            "(SELECT model_id FROM champion_history WHERE ended_at IS NULL)"
        )
    )
    op.create_index(
        _INDEX, "champion_history", ["exchange", "symbol", "interval"], unique=True,
        sqlite_where=sa.text("ended_at IS NULL"), postgresql_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="champion_history")
