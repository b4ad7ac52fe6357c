"""Messaging: the message ledger, provider reports, suppressions, inbound replies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, server_now


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
    # Ops re-sent this failed or bounced message (POST /v1/messages/{id}/resend): at most
    # one re-send per message, its key derived from this one's.
    resend_of: Mapped[uuid.UUID | None] = mapped_column(
        UUID, ForeignKey("messages.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now(), onupdate=server_now()
    )

    __table_args__ = (
        Index("ix_messages_customer_id_created_at", "customer_id", "created_at"),
        # The unfiltered listing, newest first (keyset paging on created_at, id).
        Index("ix_messages_created_at_id", "created_at", "id"),
        Index(
            "ix_messages_resend_of",
            "resend_of",
            unique=True,
            postgresql_where=text("resend_of IS NOT NULL"),
        ),
        Index("ix_messages_cart_id", "cart_id", postgresql_where=text("cart_id IS NOT NULL")),
        Index("ix_messages_order_id", "order_id", postgresql_where=text("order_id IS NOT NULL")),
        Index("ix_messages_rule_id", "rule_id", postgresql_where=text("rule_id IS NOT NULL")),
        Index(
            "ix_messages_provider_message_id",
            "provider",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
        # Analytics read the ledger by the day a message was sent.
        Index("ix_messages_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
        # Rule analytics read a rule's messages of a period: by the day each was sent (or
        # asked for, when it never went out), and by the day anything last happened to it.
        Index(
            "ix_messages_rule_sent_day",
            "rule_id",
            text("coalesce(sent_at, created_at)"),
            postgresql_where=text("rule_id IS NOT NULL"),
        ),
        Index(
            "ix_messages_rule_last_event",
            "rule_id",
            text(
                "greatest(created_at, updated_at, sent_at, delivered_at, opened_at, "
                "clicked_at, failed_at)"
            ),
            postgresql_where=text("rule_id IS NOT NULL"),
        ),
        # The rules list: messages sent per rule and channel, read from the index alone.
        Index(
            "ix_messages_rule_sent_at",
            "rule_id",
            "sent_at",
            postgresql_include=["channel", "workflow_id", "id"],
            postgresql_where=text("rule_id IS NOT NULL AND sent_at IS NOT NULL"),
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
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)

    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id"),
        Index("ix_message_events_message_id", "message_id"),
        # Rule analytics by event date: the spam complaints of a period.
        Index(
            "ix_message_events_spamreport_at",
            "occurred_at",
            postgresql_where=text("status = 'spamreport'"),
        ),
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
    # The message whose unsubscribe link or complaint caused it, when one did (analytics
    # credit the unsubscribe to that message's rule, step and variant).
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
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
        Index(
            "ix_suppressions_message_id",
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
        ),
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
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )

    __table_args__ = (
        Index("ix_inbound_messages_from_received", "channel", "from_address", "received_at"),
    )
