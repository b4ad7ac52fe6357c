"""Reading the message ledger back, for people: the API's listing, newest first.

Kept apart from ``ledger.py``, whose functions work inside the send's own transactions.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.errors import Unprocessable
from db.models import Message


def _cursor(row: Message) -> str:
    # URL-safe and opaque: clients pass it back as it is.
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, ident = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unprocessable(
            "cursor: not a cursor this API gave out",
            fields=[{"loc": ["query", "cursor"], "msg": "not a cursor this API gave out"}],
        ) from exc


async def newest_first(
    session: AsyncSession,
    *,
    filters: dict[str, str | None],
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Message], str | None]:
    """One page of the messages matching ``filters`` (``messages`` columns; ``None`` values
    are ignored) and ``status``, after ``cursor``; and the cursor of the next (older) page,
    ``None`` when there is none."""
    query = select(Message)
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(Message, name) == value)
    if status is not None:
        query = query.where(Message.status == status)
    if cursor is not None:
        at, ident = _parse_cursor(cursor)
        # Keyset paging on (created_at, id): rows created in one transaction share a time.
        query = query.where(tuple_(Message.created_at, Message.id) < tuple_(at, ident))
    query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_cursor(rows[-1]) if more and rows else None)


async def resends_of(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """``old message id -> its re-send's id``, for those of ``ids`` ops re-sent."""
    if not ids:
        return {}
    rows = await session.execute(
        select(Message.resend_of, Message.id).where(Message.resend_of.in_(ids))
    )
    return {old: new for old, new in rows if old is not None}
