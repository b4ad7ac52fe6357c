"""GET /v1/messages: the message ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import SessionDep, require
from api.errors import documented
from contracts.errors import Unprocessable
from services.messaging import queries
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
    rows, next_cursor = await queries.newest_first(
        session, filters=filters, status=status, cursor=cursor, limit=limit
    )
    return MessagePage(
        messages=[MessageOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )
