"""The orders read model (``orders``): one row per order, written by the order workflow's
``save_order`` activity after every change, and read by ``GET /v1/orders`` and the
payments analytics.

The workflow stays the truth (``GET /v1/orders/{id}`` asks it); the row is what it last
wrote. A write carries a version that grows with every write of the order, and the row only
takes a newer one: a retried or late write changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.errors import Unprocessable
from contracts.order_facts import SaveOrderInput
from db.models import Order

_IDENTIFIER = re.compile(r"[!-~]{1,128}")  # an order id, as contracts.fields.Identifier


async def save(session: AsyncSession, write: SaveOrderInput) -> bool:
    """Upsert the order's row from ``write``; True when the row took it (it was newer)."""
    values = {
        **write.facts.model_dump(),
        "updated_at": write.updated_at,
        "version": write.version,
    }
    statement = insert(Order).values(**values)
    excluded = statement.excluded
    changes: dict[str, Any] = {name: excluded[name] for name in values if name != "order_id"}
    # The first time money was seen paid stays the first, whatever a later write says.
    changes["paid_at"] = func.least(Order.paid_at, excluded.paid_at)
    upsert = statement.on_conflict_do_update(
        index_elements=[Order.order_id],
        set_=changes,
        where=Order.version < excluded.version,
    ).returning(Order.order_id)
    return (await session.scalar(upsert)) is not None


def _cursor(row: Order) -> str:
    raw = f"{row.placed_at.isoformat()}|{row.order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, order_id = raw.partition("|")
        if not sep or not _IDENTIFIER.fullmatch(order_id):
            raise ValueError(cursor)
        return datetime.fromisoformat(at), order_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Unprocessable(
            "cursor: not a cursor this API gave out",
            fields=[{"loc": ["query", "cursor"], "msg": "not a cursor this API gave out"}],
        ) from exc


async def newest_first(
    session: AsyncSession,
    *,
    filters: dict[str, object | None],
    cursor: str | None,
    limit: int,
) -> tuple[list[Order], str | None]:
    """One page of the orders matching ``filters`` (``orders`` columns; ``None`` values are
    ignored), newest placed first, after ``cursor``; and the cursor of the next (older)
    page, ``None`` when there is none."""
    query = select(Order)
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(Order, name) == value)
    if cursor is not None:
        at, order_id = _parse_cursor(cursor)
        query = query.where(tuple_(Order.placed_at, Order.order_id) < tuple_(at, order_id))
    query = query.order_by(Order.placed_at.desc(), Order.order_id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_cursor(rows[-1]) if more and rows else None)
