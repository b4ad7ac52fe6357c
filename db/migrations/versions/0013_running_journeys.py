"""running journeys: the overview's count of journeys running now, from an index

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_journey_entries_running",
        "journey_entries",
        ["rule_id"],
        postgresql_where=sa.text("exited_at IS NULL AND NOT test"),
    )


def downgrade() -> None:
    op.drop_index("ix_journey_entries_running", table_name="journey_entries")
