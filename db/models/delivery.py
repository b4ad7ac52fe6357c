"""The outbox: each accepted event's deliveries to workflows, and the holds keeping them in
order."""

from __future__ import annotations

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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, server_now


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
        DateTime(timezone=True), server_default=server_now()
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now()
    )
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
