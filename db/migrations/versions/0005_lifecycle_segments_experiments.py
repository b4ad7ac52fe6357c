"""lifecycle campaigns: computed customer attributes, purchases, co-purchases, interests,
back-in-stock subscriptions, segments, time-trigger claims, split assignments, experiments

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column(
            "birthday_md",
            sa.Integer(),
            sa.Computed(
                "(EXTRACT(MONTH FROM birthday) * 100 + EXTRACT(DAY FROM birthday))::int",
                persisted=True,
            ),
            nullable=True,
        ),
    )
    op.create_index("ix_customers_birthday_md", "customers", ["birthday_md", "id"])

    op.add_column("journey_entries", sa.Column("run_id", sa.String(length=64), nullable=True))
    op.drop_constraint("uq_journey_entries_rule_id_workflow_id", "journey_entries", type_="unique")
    op.create_index(
        "uq_journey_entries_rule_id_workflow_id_run_id",
        "journey_entries",
        ["rule_id", "workflow_id", sa.text("coalesce(run_id, '')")],
        unique=True,
    )
    op.create_index(
        "ix_journey_entries_customer_id_exited_at", "journey_entries", ["customer_id", "exited_at"]
    )

    op.create_table(
        "customer_stats",
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("orders_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("spent", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("orders_by_currency", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("coupon_orders", sa.Integer(), server_default="0", nullable=False),
        sa.Column("first_order_at", _TS, nullable=True),
        sa.Column("last_order_at", _TS, nullable=True),
        sa.Column("first_order_md", sa.Integer(), nullable=True),
        sa.Column("city", sa.String(length=200), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("preferred_channel", sa.String(length=16), nullable=True),
        sa.Column("updated_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_stats")),
    )
    op.create_index(
        "ix_customer_stats_last_order_at", "customer_stats", ["last_order_at", "customer_id"]
    )
    op.create_index(
        "ix_customer_stats_first_order_md", "customer_stats", ["first_order_md", "customer_id"]
    )

    op.create_table(
        "product_purchases",
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("category", sa.String(length=200), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("purchased_at", _TS, nullable=False),
        sa.Column("replenish_after_days", sa.Integer(), nullable=True),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("replenish_due_at", _TS, nullable=True),
        sa.Column("rebought_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("order_id", "sku", name=op.f("pk_product_purchases")),
    )
    op.create_index(
        "ix_product_purchases_customer_sku", "product_purchases", ["customer_id", "sku"]
    )
    op.create_index("ix_product_purchases_sku", "product_purchases", ["sku"])
    op.create_index(
        "ix_product_purchases_replenish_due",
        "product_purchases",
        ["replenish_due_at", "customer_id"],
        postgresql_where=sa.text("replenish_due_at IS NOT NULL AND rebought_at IS NULL"),
    )

    op.create_table(
        "co_purchases",
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("other_sku", sa.String(length=128), nullable=False),
        sa.Column("customers", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("sku", "other_sku", name=op.f("pk_co_purchases")),
    )
    op.create_index("ix_co_purchases_sku_customers", "co_purchases", ["sku", "customers"])

    op.create_table(
        "product_interests",
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("last_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("sku", "customer_id", name=op.f("pk_product_interests")),
    )

    op.create_table(
        "back_in_stock_subscriptions",
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("subscribed_at", _TS, nullable=False),
        sa.Column("notified_event_id", sa.String(length=128), nullable=True),
        sa.Column("notified_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("sku", "customer_id", name=op.f("pk_back_in_stock_subscriptions")),
    )
    op.create_index(
        "ix_back_in_stock_subscriptions_waiting",
        "back_in_stock_subscriptions",
        ["sku", "customer_id"],
        postgresql_where=sa.text("notified_at IS NULL"),
    )

    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("conditions", postgresql.JSONB(), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("created_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )

    op.create_table(
        "journey_claims",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("occurrence", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=400), nullable=False),
        sa.Column("claimed_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint(
            "rule_id", "customer_id", "occurrence", name=op.f("pk_journey_claims")
        ),
    )
    op.create_index(
        "ix_journey_claims_unstarted",
        "journey_claims",
        ["claimed_at"],
        postgresql_where=sa.text("started_at IS NULL"),
    )

    op.create_table(
        "split_assignments",
        sa.Column("workflow_id", sa.String(length=400), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), server_default="bucket", nullable=False),
        sa.Column("assigned_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "run_id", "path", name=op.f("pk_split_assignments")),
    )
    op.create_index(
        "ix_split_assignments_rule", "split_assignments", ["rule_id", "rule_version", "path"]
    )

    op.create_table(
        "experiments",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("winner", sa.String(length=64), nullable=True),
        sa.Column("promoted", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("result", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["rules.id"],
            name=op.f("fk_experiments_rule_id_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rule_id", "rule_version", "path", name=op.f("pk_experiments")),
    )


def downgrade() -> None:
    op.drop_table("experiments")
    op.drop_index("ix_split_assignments_rule", table_name="split_assignments")
    op.drop_table("split_assignments")
    op.drop_index("ix_journey_claims_unstarted", table_name="journey_claims")
    op.drop_table("journey_claims")
    op.drop_table("segments")
    op.drop_index(
        "ix_back_in_stock_subscriptions_waiting", table_name="back_in_stock_subscriptions"
    )
    op.drop_table("back_in_stock_subscriptions")
    op.drop_table("product_interests")
    op.drop_index("ix_co_purchases_sku_customers", table_name="co_purchases")
    op.drop_table("co_purchases")
    op.drop_index("ix_product_purchases_replenish_due", table_name="product_purchases")
    op.drop_index("ix_product_purchases_sku", table_name="product_purchases")
    op.drop_index("ix_product_purchases_customer_sku", table_name="product_purchases")
    op.drop_table("product_purchases")
    op.drop_index("ix_customer_stats_first_order_md", table_name="customer_stats")
    op.drop_index("ix_customer_stats_last_order_at", table_name="customer_stats")
    op.drop_table("customer_stats")
    op.drop_index("ix_journey_entries_customer_id_exited_at", table_name="journey_entries")
    op.drop_index("uq_journey_entries_rule_id_workflow_id_run_id", table_name="journey_entries")
    op.create_unique_constraint(
        "uq_journey_entries_rule_id_workflow_id", "journey_entries", ["rule_id", "workflow_id"]
    )
    op.drop_column("journey_entries", "run_id")
    op.drop_index("ix_customers_birthday_md", table_name="customers")
    op.drop_column("customers", "birthday_md")
