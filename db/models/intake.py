"""Events as accepted, exactly once per id."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Index,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, server_now


class Event(Base):
    """Every accepted event, exactly as accepted. Its id is the client's idempotency key."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
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
        # The shop's own order revenue, by day (analytics overview).
        Index(
            "ix_events_order_placed_occurred_at",
            "occurred_at",
            postgresql_where=text("type = 'order.placed'"),
        ),
        Index(
            "ix_events_order_id_type",
            "order_id",
            "type",
            postgresql_where=text("order_id IS NOT NULL"),
        ),
    )
