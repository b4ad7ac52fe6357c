"""messages: resend_of (ops re-sent a failed or bounced message), and the index the
unfiltered ledger listing pages on

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("resend_of", postgresql.UUID(), nullable=True))
    op.create_foreign_key(
        "fk_messages_resend_of_messages",
        "messages",
        "messages",
        ["resend_of"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(
        "ix_messages_resend_of",
        "messages",
        ["resend_of"],
        unique=True,
        postgresql_where=sa.text("resend_of IS NOT NULL"),
    )
    op.create_index("ix_messages_created_at_id", "messages", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_at_id", table_name="messages")
    op.drop_index("ix_messages_resend_of", table_name="messages")
    op.drop_constraint("fk_messages_resend_of_messages", "messages", type_="foreignkey")
    op.drop_column("messages", "resend_of")
