"""event routes delivered to ended workflows: a longer status and the reason

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "event_routes",
        "status",
        type_=sa.String(32),
        existing_type=sa.String(16),
        existing_server_default="pending",
        existing_nullable=False,
    )
    op.add_column("event_routes", sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("event_routes", "detail")
    op.execute("UPDATE event_routes SET status = 'skipped' WHERE status = 'delivered_to_closed'")
    op.alter_column(
        "event_routes",
        "status",
        type_=sa.String(16),
        existing_type=sa.String(32),
        existing_server_default="pending",
        existing_nullable=False,
    )
