"""Customers: profiles, consent history, the facts kept from their events, segments."""

from __future__ import annotations

import uuid
from datetime import date, datetime
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
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, server_now


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
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now(), onupdate=server_now()
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
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )

    __table_args__ = (
        Index("ix_consent_changes_customer_id_occurred_at", "customer_id", "occurred_at"),
    )


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
        DateTime(timezone=True), server_default=server_now(), onupdate=server_now()
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
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now(), onupdate=server_now()
    )
