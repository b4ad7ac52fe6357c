"""Segments: saved audiences in the rules' condition language, over customer attributes.

Membership is never stored: it is ``evaluate(conditions, {"customer": attributes})`` on
the computed attributes, so it is always current and a rule condition
``customer.segments contains seg_x`` agrees with ``GET /v1/segments/seg_x/customers``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.conditions import All, Compare, Condition, evaluate, fields_of
from contracts.errors import NotFound, Unprocessable
from db.models import Customer, CustomerStats, Segment
from services.customers.attributes import attributes, preferred_channels

CONDITION: TypeAdapter[Any] = TypeAdapter(Condition)
# A members page reads at most this many customers: a narrow segment over a big shop
# answers in bounded time with fewer members (maybe none) and a cursor to go on from.
SCAN_BUDGET = 5000
_CHUNK = 500
MEMBER_FIELDS = (
    "orders_count",
    "total_spent",
    "currency",
    "last_order_at",
    "country",
    "city",
)


class CursorError(Unprocessable):
    """A members cursor this API did not hand out."""

    def __init__(self) -> None:
        msg = "cursor is not one this API returned"
        super().__init__(f"cursor: {msg}", fields=[{"loc": ["query", "cursor"], "msg": msg}])


def new_segment_id() -> str:
    return "seg_" + secrets.token_hex(6)


def field_problem(condition: Any) -> str | None:
    """Segments describe customers: only ``customer.*`` fields, and not segment
    membership itself (a segment defined by segments could define itself)."""
    for field in fields_of(condition):
        if not field.startswith("customer."):
            return f"{field}: segments read customer fields only (customer.*)"
        if field == "customer.segments":
            return f"{field}: a segment cannot be defined by segment membership"
    return None


def stored(condition: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = CONDITION.dump_python(condition, mode="json", by_alias=True)
    return dumped


def parse(conditions: dict[str, Any]) -> Any:
    return CONDITION.validate_python(conditions)


async def create(
    session: AsyncSession,
    *,
    name: str,
    description: str | None,
    condition: Any,
    created_by: uuid.UUID | None,
) -> Segment:
    row = Segment(
        id=new_segment_id(),
        name=name,
        description=description,
        conditions=stored(condition),
        created_by=created_by,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def get(session: AsyncSession, segment_id: str, *, for_update: bool = False) -> Segment:
    """The segment with this id; ``NotFound`` when there is none."""
    row = await session.get(Segment, segment_id, with_for_update=for_update)
    if row is None:
        raise NotFound(f"no segment with id {segment_id!r}")
    return row


async def replace(
    session: AsyncSession, segment_id: str, *, name: str, description: str | None, condition: Any
) -> Segment:
    row = await get(session, segment_id, for_update=True)
    row.name, row.description, row.conditions = name, description, stored(condition)
    row.updated_at = func.now()
    await session.flush()
    await session.refresh(row)
    return row


async def list_all(session: AsyncSession) -> list[Segment]:
    return list(await session.scalars(select(Segment).order_by(Segment.created_at, Segment.id)))


def memberships(segments: Iterable[Segment], customer: dict[str, Any]) -> list[str]:
    """Ids of the segments whose conditions hold for these customer attributes."""
    context = {"customer": customer}
    return [s.id for s in segments if evaluate(parse(s.conditions), context)]


def encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = json.loads(raw)["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise CursorError() from exc
    if not isinstance(after, str):
        raise CursorError()
    return after


def _prefilter(condition: Any) -> list[ColumnElement[bool]]:
    """SQL that only narrows the scan: every customer it drops fails ``evaluate`` too
    (a customer without stats has 0 orders, hence the coalesce). Only conjuncts on
    ``customer.orders_count``; everything else is left to ``evaluate``."""
    parts = condition.all if isinstance(condition, All) else [condition]
    orders = func.coalesce(CustomerStats.orders_count, 0)
    ops = {
        "eq": orders.__eq__,
        "gt": orders.__gt__,
        "gte": orders.__ge__,
        "lt": orders.__lt__,
        "lte": orders.__le__,
    }
    out: list[ColumnElement[bool]] = []
    for part in parts:
        if (
            isinstance(part, Compare)
            and part.field == "customer.orders_count"
            and part.op in ops
            and not isinstance(part.value, bool)
        ):
            try:
                out.append(ops[part.op](Decimal(str(part.value))))
            except ArithmeticError:
                continue
    return out


async def members(
    session: AsyncSession, segment: Segment, *, limit: int, cursor: str | None, now: datetime
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of members in customer-id order, and the cursor for the next (None at
    the end). Reads at most ``SCAN_BUDGET`` customers, so a page may hold fewer than
    ``limit`` members, even none, and still have a next cursor."""
    condition = parse(segment.conditions)
    needs_channel = "customer.preferred_channel" in set(fields_of(condition))
    after = decode_cursor(cursor) if cursor else None
    where = _prefilter(condition)
    found: list[dict[str, Any]] = []
    scanned = 0
    while True:
        take = min(_CHUNK, SCAN_BUDGET - scanned)
        query = (
            select(Customer, CustomerStats)
            .outerjoin(CustomerStats, CustomerStats.customer_id == Customer.id)
            .where(*where)
            .order_by(Customer.id)
            .limit(take)
        )
        if after is not None:
            query = query.where(Customer.id > after)
        rows = (await session.execute(query)).all()
        channels = (
            await preferred_channels(session, [c.id for c, _ in rows]) if needs_channel else {}
        )
        for customer, stats in rows:
            scanned += 1
            after = customer.id
            context = attributes(customer, stats, now, channels.get(customer.id))
            if evaluate(condition, {"customer": context}):
                found.append(_member(context))
                if len(found) == limit:
                    return found, encode_cursor(after)
        if len(rows) < take:
            return found, None
        if scanned >= SCAN_BUDGET:
            return found, encode_cursor(after) if after is not None else None


def _member(context: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": context["id"],
        "email": context["email"],
        "name": context["name"],
        **{key: context[key] for key in MEMBER_FIELDS},
    }
