"""Journeys: rules and their versions, journey entries and claims, A/B splits, coupons and
attributions."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, server_now


class Rule(Base):
    """An automation rule. Its definition lives in versions; journeys pin the version."""

    __tablename__ = "rules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # A stable name for rules Sutra installs itself, so installing twice changes nothing.
    slug: Mapped[str | None] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    trigger_event: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, server_default="100")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now(), onupdate=server_now()
    )

    __table_args__ = (Index("ix_rules_trigger_event_status", "trigger_event", "status"),)


class RuleVersion(Base):
    __tablename__ = "rule_versions"

    rule_id: Mapped[str] = mapped_column(
        ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID)


class RuleAudit(Base):
    """Who changed what in a rule, and when."""

    __tablename__ = "rule_audit"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(String(200))
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=server_now())

    __table_args__ = (Index("ix_rule_audit_rule_id_at", "rule_id", "at"),)


class JourneyEntry(Base):
    """A customer entering a rule's journey: the basis of re-entry policy and analytics."""

    __tablename__ = "journey_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    rule_version: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(128))
    workflow_id: Mapped[str] = mapped_column(String(300))
    cart_id: Mapped[str | None] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(64))
    # The run that entered (lifecycle journeys): a workflow id is reused by later runs.
    run_id: Mapped[str | None] = mapped_column(String(64))
    test: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # In the rule's holdout group: tracked for the goal, sent no message.
    holdout: Mapped[bool] = mapped_column(Boolean, server_default="false")
    entered_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    exited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_reason: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index(
            "uq_journey_entries_rule_id_workflow_id_run_id",
            "rule_id",
            "workflow_id",
            text("coalesce(run_id, '')"),
            unique=True,
        ),
        Index("ix_journey_entries_customer_id_exited_at", "customer_id", "exited_at"),
        Index("ix_journey_entries_rule_customer", "rule_id", "customer_id", "entered_at"),
        # Analytics leave rehearsals out by workflow id: a probe of this small index.
        Index("ix_journey_entries_test_workflow_id", "workflow_id", postgresql_where=text("test")),
        # The overview's journeys running now, counted from the index alone.
        Index(
            "ix_journey_entries_running",
            "rule_id",
            postgresql_where=text("exited_at IS NULL AND NOT test"),
        ),
        Index(
            "ix_journey_entries_cart_entered_at",
            "entered_at",
            postgresql_where=text("cart_id IS NOT NULL"),
        ),
        # Rule analytics: a rule's journeys entered, and ended, in a period (entered: with
        # all that is counted of them, read from the index alone).
        Index(
            "ix_journey_entries_rule_entered_at",
            "rule_id",
            "entered_at",
            postgresql_include=[
                "rule_version",
                "variant",
                "customer_id",
                "test",
                "exit_reason",
                "exited_at",
            ],
        ),
        # Test runs are left out of every figure: a probe per message, over a few rows.
        Index(
            "ix_journey_entries_test_runs",
            "rule_id",
            "workflow_id",
            postgresql_where=text("test"),
        ),
        Index(
            "ix_journey_entries_rule_exited_at",
            "rule_id",
            "exited_at",
            postgresql_where=text("exited_at IS NOT NULL"),
        ),
    )


class JourneyOrder(Base):
    """An order a journey saw as its goal (the cart's order, the customer's order a
    lifecycle journey ended on or waited for), treated and held-out journeys alike:
    ``converted`` when it came within the rule's ``attribution_window`` after entry. The
    basis of holdout lift, and of which orders a recompute of attributions covers."""

    __tablename__ = "journey_orders"

    entry_id: Mapped[int] = mapped_column(
        ForeignKey("journey_entries.id", ondelete="CASCADE"), primary_key=True
    )
    order_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    cart_id: Mapped[str | None] = mapped_column(String(128))
    revenue: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    currency: Mapped[str] = mapped_column(String(3))
    ordered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    converted: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_journey_orders_order_id", "order_id"),
        Index("ix_journey_orders_ordered_at", "ordered_at"),
    )


class AttributionModel(Base):
    """The shop's attribution windows, once changed through the API (until then the
    settings' ``SUTRA_ATTRIBUTION_WINDOWS``): one row."""

    __tablename__ = "attribution_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    windows: Mapped[dict[str, Any]] = mapped_column(JSONB)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    changed_by: Mapped[str | None] = mapped_column(String(200))


class JourneyClaim(Base):
    """A time trigger's promise that one customer gets one journey for one occurrence
    (a birthday year, an inactivity spell, a delivered product line). Written before the
    workflow is started: a sweep that dies halfway and runs again starts the rest, and
    never a second journey for the same occurrence."""

    __tablename__ = "journey_claims"

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    occurrence: Mapped[str] = mapped_column(String(200), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(400))
    claimed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_journey_claims_unstarted", "claimed_at", postgresql_where=text("started_at IS NULL")
        ),
    )


class SplitAssignment(Base):
    """Which variant of a rule's split a journey took: recorded once, the basis of
    per-variant results."""

    __tablename__ = "split_assignments"

    workflow_id: Mapped[str] = mapped_column(String(400), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(64))
    # "bucket": the customer's hash bucket; "winner": all traffic goes to a declared winner.
    reason: Mapped[str] = mapped_column(String(16), server_default="bucket")
    assigned_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )

    __table_args__ = (Index("ix_split_assignments_rule", "rule_id", "rule_version", "path"),)


class Experiment(Base):
    """The A/B test behind one split step of one rule version, and its verdict."""

    __tablename__ = "experiments"

    rule_id: Mapped[str] = mapped_column(
        ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True
    )
    rule_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), server_default="running")  # | decided
    winner: Mapped[str | None] = mapped_column(String(64))
    # Whether every later journey is sent to the winner (the rule's experiment setting).
    promoted: Mapped[bool] = mapped_column(Boolean, server_default="false")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The figures the verdict was made on: per variant n, conversions, p-value.
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


class Coupon(Base):
    """A single-use, expiring discount code bound to one customer (and cart)."""

    __tablename__ = "coupons"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Deterministic (journey step): a retried activity finds its coupon instead of minting.
    issue_key: Mapped[str] = mapped_column(String(400), unique=True)
    percent_off: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(128))
    cart_id: Mapped[str | None] = mapped_column(String(128))
    rule_id: Mapped[str | None] = mapped_column(String(64))
    rule_version: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), server_default="sutra")
    # active -> redeemed | revoked ; expiry is read from expires_at
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    redeemed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    redeemed_order_id: Mapped[str | None] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_coupons_cart_id_status", "cart_id", "status"),
        Index("ix_coupons_customer_id", "customer_id"),
    )


class Attribution(Base):
    """An order credited to the last message the customer received before it."""

    __tablename__ = "attributions"

    order_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    cart_id: Mapped[str | None] = mapped_column(String(128))
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    rule_id: Mapped[str | None] = mapped_column(String(64))
    rule_version: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(16))
    revenue: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    currency: Mapped[str] = mapped_column(String(3))
    discount: Mapped[Decimal] = mapped_column(Numeric(18, 4), server_default="0")
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    ordered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attributed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )

    __table_args__ = (
        Index("ix_attributions_rule_id", "rule_id", "rule_version"),
        Index("ix_attributions_ordered_at", "ordered_at"),
        # Rule analytics by event date: a rule's orders placed in a period.
        Index("ix_attributions_rule_ordered_at", "rule_id", "ordered_at"),
    )
