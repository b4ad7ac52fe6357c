"""Tables. Every schema change goes through an Alembic migration in db/migrations."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return func.now()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the whole key: keys are 256-bit random, so a slow hash buys nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """Every accepted event, exactly as accepted. Its id is the client's idempotency key."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    customer_id: Mapped[str | None] = mapped_column(String(128))
    cart_id: Mapped[str | None] = mapped_column(String(128))
    order_id: Mapped[str | None] = mapped_column(String(128))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    payload_sha256: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_events_customer_id_occurred_at", "customer_id", "occurred_at"),
        Index(
            "ix_events_cart_id_type",
            "cart_id",
            "type",
            postgresql_where=text("cart_id IS NOT NULL"),
        ),
        Index(
            "ix_events_order_id_type",
            "order_id",
            "type",
            postgresql_where=text("order_id IS NOT NULL"),
        ),
    )


class EventRoute(Base):
    """One delivery of an event into one workflow: the transactional outbox towards Temporal.

    Written in the same transaction as the event, so an accepted event always has its
    deliveries on record; the dispatcher delivers them in ``seq`` order per workflow.
    Provider webhooks (a bounce, a reply) reach workflows the same way, without an event.
    """

    __tablename__ = "event_routes"

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    origin: Mapped[str] = mapped_column(String(32), server_default="event")
    workflow_id: Mapped[str] = mapped_column(String(300))
    workflow_type: Mapped[str] = mapped_column(String(100))
    # signal_with_start: create the workflow if needed; signal: only if it is running;
    # signal_query: every running workflow target_query finds (workflow_id is then the
    # ordering lane, e.g. "customer:c_1").
    kind: Mapped[str] = mapped_column(String(32))
    signal_name: Mapped[str] = mapped_column(String(100))
    signal_payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # signal_query: the visibility query naming the workflows to signal.
    target_query: Mapped[str | None] = mapped_column(Text)
    start_input: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    search_attributes: Mapped[dict[str, str]] = mapped_column(JSONB, server_default="{}")
    summary: Mapped[str | None] = mapped_column(Text)
    # pending -> delivered | skipped (signal-only target not running) | delivered_to_closed
    # (the order or cart had ended: told to the ended workflow, see services/ended_workflows)
    status: Mapped[str] = mapped_column(String(32), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # How a delivery to an ended workflow was judged ("order ended cancelled; reopened ...").
    detail: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now()
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_event_routes_pending", "seq", postgresql_where=text("status = 'pending'")),
        Index(
            "ix_event_routes_workflow_pending",
            "workflow_id",
            "seq",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_event_routes_event_id", "event_id"),
    )


class RouteHold(Base):
    """A workflow whose head delivery failed for a reason of its own (not a Temporal outage).

    Its later events wait behind it, preserving order, while every other workflow's
    events flow on.
    """

    __tablename__ = "route_holds"

    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failures: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class Customer(Base):
    """The profile Sutra keeps of a shop's customer, upserted from events."""

    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(3))
    country: Mapped[str | None] = mapped_column(String(2))
    birthday: Mapped[date | None] = mapped_column(Date)
    # month * 100 + day: the birthday sweep finds today's birthdays by index, any year.
    birthday_md: Mapped[int | None] = mapped_column(
        Integer,
        Computed(
            "(EXTRACT(MONTH FROM birthday) * 100 + EXTRACT(DAY FROM birthday))::int",
            persisted=True,
        ),
    )
    consent_email: Mapped[bool | None] = mapped_column(Boolean)
    consent_sms: Mapped[bool | None] = mapped_column(Boolean)
    consent_whatsapp: Mapped[bool | None] = mapped_column(Boolean)
    # occurred_at of the event each field was last taken from ({"email": "...", "consent.sms":
    # "..."}): an older event arriving late must not overwrite newer data or consent.
    fields_as_of: Mapped[dict[str, str]] = mapped_column(JSONB, server_default="{}")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )

    __table_args__ = (
        Index("ix_customers_email", "email", postgresql_where=text("email IS NOT NULL")),
        Index("ix_customers_phone", "phone", postgresql_where=text("phone IS NOT NULL")),
        Index("ix_customers_birthday_md", "birthday_md", "id"),
    )


class ConsentChange(Base):
    """History of every change of a customer's consent on a channel, and where it came from."""

    __tablename__ = "consent_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    granted: Mapped[bool] = mapped_column(Boolean)
    previous: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str | None] = mapped_column(String(128))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        Index("ix_consent_changes_customer_id_occurred_at", "customer_id", "occurred_at"),
    )


class Message(Base):
    """The message ledger: one row per message a journey asked for, on one channel attempt.

    ``key`` is deterministic (workflow id, step, attempt) and written before any provider
    call, so a retried activity finds the row and never sends twice.
    """

    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str | None] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(100))
    locale: Mapped[str | None] = mapped_column(String(35))
    kind: Mapped[str] = mapped_column(String(16))
    # queued, sending, sent, delivered, opened, clicked, bounced, failed, suppressed
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    to: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    rule_id: Mapped[str | None] = mapped_column(String(64))
    rule_version: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[str | None] = mapped_column(String(64))
    workflow_id: Mapped[str | None] = mapped_column(String(300))
    cart_id: Mapped[str | None] = mapped_column(String(128))
    order_id: Mapped[str | None] = mapped_column(String(128))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    deferred_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    sending_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clicked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )

    __table_args__ = (
        Index("ix_messages_customer_id_created_at", "customer_id", "created_at"),
        Index("ix_messages_cart_id", "cart_id", postgresql_where=text("cart_id IS NOT NULL")),
        Index("ix_messages_order_id", "order_id", postgresql_where=text("order_id IS NOT NULL")),
        Index("ix_messages_rule_id", "rule_id", postgresql_where=text("rule_id IS NOT NULL")),
        Index(
            "ix_messages_provider_message_id",
            "provider",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
        # The frequency cap looks back at a customer's recent marketing sends per channel.
        Index(
            "ix_messages_marketing_sent",
            "customer_id",
            "channel",
            "sent_at",
            postgresql_where=text("kind = 'marketing'"),
        ),
    )


class MessageEvent(Base):
    """What providers reported about a message, once each (their event id is unique)."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE")
    )
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)

    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id"),
        Index("ix_message_events_message_id", "message_id"),
    )


class Suppression(Base):
    """An address Sutra must not message: opted out (STOP, unsubscribe) or undeliverable.

    ``scope`` "marketing" blocks marketing only (an unsubscribe); "all" blocks transactional
    messages too (STOP, hard bounce, invalid number, spam report).
    """

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    scope: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    customer_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "uq_suppressions_active",
            "channel",
            "address",
            "scope",
            unique=True,
            postgresql_where=text("lifted_at IS NULL"),
        ),
    )


class TemplateOverride(Base):
    """A marketer's version of a template for one channel and locale."""

    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    locale: Mapped[str] = mapped_column(String(35), primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    kind: Mapped[str] = mapped_column(String(16))
    context: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )


class InboundMessage(Base):
    """A customer's reply by SMS or WhatsApp."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    provider_message_id: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    from_address: Mapped[str] = mapped_column(String(64))
    to_address: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    keyword: Mapped[str | None] = mapped_column(String(16))
    customer_id: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        Index("ix_inbound_messages_from_received", "channel", "from_address", "received_at"),
    )


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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )

    __table_args__ = (Index("ix_rules_trigger_event_status", "trigger_event", "status"),)


class RuleVersion(Base):
    __tablename__ = "rule_versions"

    rule_id: Mapped[str] = mapped_column(
        ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
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
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (Index("ix_rule_audit_rule_id_at", "rule_id", "at"),)


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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
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
    attributed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (Index("ix_attributions_rule_id", "rule_id", "rule_version"),)


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
    entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
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
    )


class PaymentLink(Base):
    """A payment link Sutra asked a provider for, recorded before the call (like a message)."""

    __tablename__ = "payment_links"

    # Deterministic per order and purpose: the provider's reference id / idempotency key.
    reference: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # upfront | prepaid | offer
    provider: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    currency: Mapped[str] = mapped_column(String(3))
    # creating (call under way) -> created -> paid | cancelled | expired
    status: Mapped[str] = mapped_column(String(16), server_default="creating")
    link_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    url: Mapped[str | None] = mapped_column(Text)
    expire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payment_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Refund(Base):
    """A refund, recorded before the provider call: one per key, ever."""

    __tablename__ = "refunds"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str] = mapped_column(String(128))
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    # requesting (call under way) -> done | failed
    status: Mapped[str] = mapped_column(String(16), server_default="requesting")
    provider_refund_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CustomerStats(Base):
    """Computed customer attributes, maintained from events as they are accepted: what
    segments, conditions and time triggers read without scanning the event log."""

    __tablename__ = "customer_stats"

    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    orders_count: Mapped[int] = mapped_column(Integer, server_default="0")
    # {"PKR": "12500.00", "USD": "40.00"}: Sutra never converts currencies.
    spent: Mapped[dict[str, str]] = mapped_column(JSONB, server_default="{}")
    orders_by_currency: Mapped[dict[str, int]] = mapped_column(JSONB, server_default="{}")
    coupon_orders: Mapped[int] = mapped_column(Integer, server_default="0")
    first_order_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_order_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # month * 100 + day of the first order, in UTC: the anniversary sweep's index.
    first_order_md: Mapped[int | None] = mapped_column(Integer)
    city: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    # The channel the customer engages with most (delivered/opened/clicked), if any.
    preferred_channel: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )

    __table_args__ = (
        Index("ix_customer_stats_last_order_at", "last_order_at", "customer_id"),
        Index("ix_customer_stats_first_order_md", "first_order_md", "customer_id"),
    )


class ProductPurchase(Base):
    """One product line of one order: replenishment and co-purchase counts come from here."""

    __tablename__ = "product_purchases"

    order_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    product_id: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(500))
    category: Mapped[str | None] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    purchased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # From the line's ``replenish_after`` (ISO 8601 duration or days); None: not consumable.
    replenish_after_days: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # delivered_at + replenish_after_days: the replenishment sweep's index.
    replenish_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the customer buys the same product again: no reminder for this line then.
    rebought_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_product_purchases_customer_sku", "customer_id", "sku"),
        Index("ix_product_purchases_sku", "sku"),
        Index(
            "ix_product_purchases_replenish_due",
            "replenish_due_at",
            "customer_id",
            postgresql_where=text("replenish_due_at IS NOT NULL AND rebought_at IS NULL"),
        ),
    )


class CoPurchase(Base):
    """How many customers bought both ``sku`` and ``other_sku`` (in any of their orders):
    "customers who bought X also bought Y", refreshed incrementally per order."""

    __tablename__ = "co_purchases"

    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    other_sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    customers: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (Index("ix_co_purchases_sku_customers", "sku", "customers"),)


class ProductInterest(Base):
    """A customer looked at or carted a product: who hears of its price drop."""

    __tablename__ = "product_interests"

    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # viewed | carted
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BackInStockSubscription(Base):
    """A customer asked to hear when a product is back; notified once per subscription."""

    __tablename__ = "back_in_stock_subscriptions"

    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    subscribed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The product.back_in_stock event that notified it; NULL while waiting.
    notified_event_id: Mapped[str | None] = mapped_column(String(128))
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_back_in_stock_subscriptions_waiting",
            "sku",
            "customer_id",
            postgresql_where=text("notified_at IS NULL"),
        ),
    )


class Segment(Base):
    """A saved audience: conditions in the rules' language over customer attributes."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )


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
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
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
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

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


class AuditEntry(Base):
    """Who changed what, and when: rules, templates, API keys, orders, customers."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    actor: Mapped[str | None] = mapped_column(String(200))
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    entity: Mapped[str] = mapped_column(String(32))  # rule | template | api_key | order | customer
    entity_id: Mapped[str] = mapped_column(String(400))
    action: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")

    __table_args__ = (Index("ix_audit_log_entity_entity_id_at", "entity", "entity_id", "at"),)


class RateLimitBucket(Base):
    """One API key's (or client IP's) token bucket, as GCRA's theoretical arrival time:
    the bucket is full when ``tat`` is in the past. Unlogged: a crash forgets the limits,
    which costs nothing, and no write goes to the WAL."""

    __tablename__ = "rate_limits"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    bucket: Mapped[str] = mapped_column(String(200), primary_key=True)
    tat: Mapped[datetime] = mapped_column(DateTime(timezone=True))
