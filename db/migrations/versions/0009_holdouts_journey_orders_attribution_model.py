"""holdouts: journey entries held out, the orders journeys saw, the attribution model

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "journey_entries",
        sa.Column("holdout", sa.Boolean(), server_default="false", nullable=False),
    )
    op.create_table(
        "journey_orders",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("cart_id", sa.String(128), nullable=True),
        sa.Column("revenue", sa.Numeric(18, 4), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("ordered_at", _TS, nullable=False),
        sa.Column("converted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journey_entries.id"],
            name=op.f("fk_journey_orders_entry_id_journey_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("entry_id", "order_id", name=op.f("pk_journey_orders")),
    )
    op.create_index("ix_journey_orders_order_id", "journey_orders", ["order_id"])
    op.create_index("ix_journey_orders_ordered_at", "journey_orders", ["ordered_at"])
    op.create_table(
        "attribution_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("windows", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("changed_at", _TS, nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribution_model")),
    )


def downgrade() -> None:
    op.drop_table("attribution_model")
    op.drop_index("ix_journey_orders_ordered_at", table_name="journey_orders")
    op.drop_index("ix_journey_orders_order_id", table_name="journey_orders")
    op.drop_table("journey_orders")
    op.drop_column("journey_entries", "holdout")
