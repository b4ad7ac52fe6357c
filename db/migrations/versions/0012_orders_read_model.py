"""orders read model: one row per order, written by the order workflow

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    money = sa.Numeric(18, 4)
    at = sa.DateTime(timezone=True)
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("cart_id", sa.String(128), nullable=True),
        sa.Column("payment_type", sa.String(16), nullable=False),
        sa.Column("placed_payment_type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payment_status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", money, nullable=False),
        sa.Column("discount", money, nullable=False),
        sa.Column("upfront_amount", money, nullable=True),
        sa.Column("remaining_amount", money, nullable=True),
        sa.Column("paid_amount", money, nullable=False),
        sa.Column("refunded_amount", money, nullable=False),
        sa.Column("city", sa.String(200), nullable=True),
        sa.Column("postal_code", sa.String(32), nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("placed_at", at, nullable=False),
        sa.Column("confirmed_at", at, nullable=True),
        sa.Column("paid_at", at, nullable=True),
        sa.Column("cancelled_at", at, nullable=True),
        sa.Column("delivered_at", at, nullable=True),
        sa.Column("rto_at", at, nullable=True),
        sa.Column("cancel_reason", sa.String(32), nullable=True),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.Column("cod_confirmation_asked", sa.Boolean(), nullable=False),
        sa.Column("cod_confirmation_answer", sa.String(8), nullable=True),
        sa.Column("converted_to_prepaid", sa.Boolean(), nullable=False),
        sa.Column("on_hold", sa.Boolean(), nullable=False),
        sa.Column("sla_breached", sa.Boolean(), nullable=False),
        sa.Column("updated_at", at, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
    )
    op.create_index("ix_orders_placed_at_order_id", "orders", ["placed_at", "order_id"])
    op.create_index("ix_orders_customer_id_placed_at", "orders", ["customer_id", "placed_at"])
    op.create_index("ix_orders_status_placed_at", "orders", ["status", "placed_at"])
    op.create_index(
        "ix_orders_placed_payment_type_placed_at", "orders", ["placed_payment_type", "placed_at"]
    )
    op.create_index(
        "ix_orders_sla_breached_placed_at",
        "orders",
        ["placed_at"],
        postgresql_where=sa.text("sla_breached"),
    )


def downgrade() -> None:
    op.drop_table("orders")
