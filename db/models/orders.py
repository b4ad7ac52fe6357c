"""Orders: the payment ledger (links and refunds), and the orders read model."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, server_now


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
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
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
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Order(Base):
    """One row per order, written by the order workflow after every change
    (``contracts/order_facts.py``, ``services/orders/read_model.py``); the workflow stays the
    truth, this is what lists and analytics read."""

    __tablename__ = "orders"
    __table_args__ = (
        # GET /v1/orders pages newest first; analytics read orders placed in a period.
        Index("ix_orders_placed_at_order_id", "placed_at", "order_id"),
        Index("ix_orders_customer_id_placed_at", "customer_id", "placed_at"),
        Index("ix_orders_status_placed_at", "status", "placed_at"),
        Index("ix_orders_placed_payment_type_placed_at", "placed_payment_type", "placed_at"),
        Index(
            "ix_orders_sla_breached_placed_at",
            "placed_at",
            postgresql_where=text("sla_breached"),
        ),
    )

    order_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    cart_id: Mapped[str | None] = mapped_column(String(128))
    payment_type: Mapped[str] = mapped_column(String(16))  # now: cod may become prepaid
    placed_payment_type: Mapped[str] = mapped_column(String(16))  # as chosen at checkout
    status: Mapped[str] = mapped_column(String(32))
    payment_status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    discount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    upfront_amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    remaining_amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    paid_amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    refunded_amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    city: Mapped[str | None] = mapped_column(String(200))
    postal_code: Mapped[str | None] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(2))
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rto_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_reason: Mapped[str | None] = mapped_column(String(32))
    reminders_sent: Mapped[int] = mapped_column(Integer)
    cod_confirmation_asked: Mapped[bool] = mapped_column(Boolean)
    cod_confirmation_answer: Mapped[str | None] = mapped_column(String(8))  # yes | no
    converted_to_prepaid: Mapped[bool] = mapped_column(Boolean)
    on_hold: Mapped[bool] = mapped_column(Boolean)
    sla_breached: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
