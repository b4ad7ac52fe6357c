"""analytics indexes: the ledger by send time, rehearsal journeys, attributions by order time

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_sent_at",
        "messages",
        ["sent_at"],
        postgresql_where=sa.text("sent_at IS NOT NULL"),
    )
    op.create_index(
        "ix_journey_entries_test_workflow_id",
        "journey_entries",
        ["workflow_id"],
        postgresql_where=sa.text("test"),
    )
    op.create_index(
        "ix_journey_entries_cart_entered_at",
        "journey_entries",
        ["entered_at"],
        postgresql_where=sa.text("cart_id IS NOT NULL"),
    )
    op.create_index("ix_attributions_ordered_at", "attributions", ["ordered_at"])
    op.create_index(
        "ix_events_order_placed_occurred_at",
        "events",
        ["occurred_at"],
        postgresql_where=sa.text("type = 'order.placed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_order_placed_occurred_at", "events")
    op.drop_index("ix_attributions_ordered_at", "attributions")
    op.drop_index("ix_journey_entries_cart_entered_at", "journey_entries")
    op.drop_index("ix_journey_entries_test_workflow_id", "journey_entries")
    op.drop_index("ix_messages_sent_at", "messages")
