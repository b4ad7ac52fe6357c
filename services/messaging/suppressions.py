"""Who must not be messaged: suppressions per address and channel, and consent changes
that come from the customer directly (STOP, START, unsubscribe links)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.messages import Channel, Kind
from db.models import ConsentChange, Customer, Suppression

Scope = Literal["marketing", "all"]


def normalize_address(channel: Channel, address: str) -> str:
    """Compare addresses as providers do: emails case-insensitively, phones in E.164."""
    if channel == "email":
        return address.strip().lower()
    return address.strip().removeprefix("whatsapp:")


async def suppress(
    session: AsyncSession,
    *,
    channel: Channel,
    address: str,
    scope: Scope,
    reason: str,
    source: str,
    customer_id: str | None = None,
    detail: str | None = None,
    message_id: uuid.UUID | None = None,
) -> None:
    """``message_id``: the message whose link or complaint caused it, if one did."""
    await session.execute(
        insert(Suppression)
        .values(
            channel=channel,
            address=normalize_address(channel, address),
            scope=scope,
            reason=reason,
            source=source,
            customer_id=customer_id,
            detail=detail,
            message_id=message_id,
        )
        .on_conflict_do_nothing(
            index_elements=["channel", "address", "scope"],
            index_where=Suppression.lifted_at.is_(None),
        )
    )


async def lift(
    session: AsyncSession, *, channel: Channel, address: str, reasons: tuple[str, ...]
) -> int:
    """Lift the suppressions the customer's own action undoes (START lifts a STOP, never
    a bounce)."""
    result = await session.execute(
        update(Suppression)
        .where(
            Suppression.channel == channel,
            Suppression.address == normalize_address(channel, address),
            Suppression.reason.in_(reasons),
            Suppression.lifted_at.is_(None),
        )
        .values(lifted_at=datetime.now(UTC))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def blocking(
    session: AsyncSession, *, channel: Channel, address: str, kind: Kind
) -> Suppression | None:
    """The suppression that stops a message of this kind to this address, if any.

    Marketing stops at any suppression; transactional messages only at those that mean
    the customer cannot or will not receive anything (STOP, bounce, invalid, spam).
    """
    scopes = ("marketing", "all") if kind == "marketing" else ("all",)
    return await session.scalar(
        select(Suppression)
        .where(
            Suppression.channel == channel,
            Suppression.address == normalize_address(channel, address),
            Suppression.scope.in_(scopes),
            Suppression.lifted_at.is_(None),
        )
        .order_by(Suppression.scope)  # "all" before "marketing": the stronger reason first
        .limit(1)
    )


async def set_consent(
    session: AsyncSession,
    *,
    customers: list[Customer],
    channel: Channel,
    granted: bool,
    source: str,
    occurred_at: datetime | None = None,
) -> None:
    """A consent change the customer made themselves, recorded in their history."""
    at = occurred_at or datetime.now(UTC)
    for customer in customers:
        previous = getattr(customer, f"consent_{channel}")
        as_of = dict(customer.fields_as_of or {})
        # Newer than anything the backend told us: a late event must not undo it.
        as_of[f"consent.{channel}"] = at.isoformat()
        customer.fields_as_of = as_of
        if previous == granted:
            continue
        setattr(customer, f"consent_{channel}", granted)
        session.add(
            ConsentChange(
                customer_id=customer.id,
                channel=channel,
                granted=granted,
                previous=previous,
                source=source,
                occurred_at=at,
            )
        )


async def customers_with_address(
    session: AsyncSession, channel: Channel, address: str
) -> list[Customer]:
    normalized = normalize_address(channel, address)
    condition = (
        func.lower(Customer.email) == normalized
        if channel == "email"
        else Customer.phone == normalized
    )
    rows = await session.scalars(
        select(Customer).where(condition).order_by(Customer.id).with_for_update()
    )
    return list(rows)
