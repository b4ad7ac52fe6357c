"""GET /v1/messages: the message ledger."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import select, tuple_

from api.deps import SessionDep, require
from api.errors import documented
from contracts.errors import Unprocessable
from db.models import Message
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/messages", tags=["messages"])


class MessageOut(BaseModel):
    id: uuid.UUID
    key: str
    customer_id: str
    channel: str | None
    template: str
    locale: str | None
    kind: str
    status: str
    reason: str | None = Field(description="Why it was suppressed, deferred or failed")
    to: str | None
    subject: str | None
    body: str | None
    coupon_code: str | None
    rule_id: str | None
    rule_version: int | None
    step: str | None
    workflow_id: str | None
    cart_id: str | None
    order_id: str | None
    provider: str | None
    provider_message_id: str | None
    error_code: str | None
    deferred_until: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    created_at: datetime
    details: dict[str, Any]


class MessagePage(BaseModel):
    messages: list[MessageOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null when there is none"
    )


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


@router.get("", summary="The message ledger, newest first", responses=documented(401, 403, 422))
async def list_messages(
    session: SessionDep,
    _: Annotated[Principal, Depends(require("ops"))],
    customer_id: str | None = None,
    cart_id: str | None = None,
    order_id: str | None = None,
    rule_id: str | None = None,
    status: str | None = None,
    cursor: str | None = Query(default=None, description="`next_cursor` of the previous page"),
    limit: int = Query(default=50, ge=1, le=500),
) -> MessagePage:
    filters = {
        "customer_id": customer_id,
        "cart_id": cart_id,
        "order_id": order_id,
        "rule_id": rule_id,
    }
    if not any(filters.values()):
        raise Unprocessable(
            "give at least one of customer_id, cart_id, order_id, rule_id",
            fields=[{"loc": ["query"], "msg": "one of customer_id, cart_id, order_id, rule_id"}],
        )
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
    return MessagePage(
        messages=[MessageOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=_cursor(rows[-1]) if more and rows else None,
    )
