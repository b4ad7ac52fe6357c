"""GET /v1/messages: the message ledger, newest first; POST /v1/messages/{id}/resend: ops
re-send a failed or bounced message (services/messaging/resend.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from api.deps import SessionDep, require
from api.errors import documented
from services.messaging import queries, resend
from services.messaging.send import Messaging
from services.platform import audit
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
    resend_of: uuid.UUID | None = Field(
        description="The failed or bounced message ops re-sent as this one, if any"
    )
    resent_as: uuid.UUID | None = Field(
        default=None, description="The message ops re-sent this one as, if they did"
    )


class MessagePage(BaseModel):
    messages: list[MessageOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null when there is none"
    )


class ResendOut(BaseModel):
    created: bool = Field(
        description="true: this request re-sent it; false: it had been re-sent before, "
        "and `message` is that re-send (nothing was sent again)"
    )
    message: MessageOut = Field(description="The new message; its `resend_of` is the old one")


@router.get(
    "",
    summary="The message ledger, newest first",
    description="Every filter is optional: without any, the newest messages of the shop.",
    responses=documented(401, 403, 422),
)
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
    rows, next_cursor = await queries.newest_first(
        session, filters=filters, status=status, cursor=cursor, limit=limit
    )
    resent = await queries.resends_of(session, [r.id for r in rows])
    return MessagePage(
        messages=[
            MessageOut.model_validate(r, from_attributes=True).model_copy(
                update={"resent_as": resent.get(r.id)}
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


@router.post(
    "/{message_id}/resend",
    summary="Re-send a failed or bounced message (once: asking again answers the same re-send)",
    description=(
        "A new ledger row linked to the old one (`resend_of`), on the same channel with the "
        "same words, through the normal send path: consent and suppressions still hold, so "
        "the re-send may itself be `suppressed` (a hard bounce suppresses the address). 201 "
        "when this request re-sent it, 200 when it had been re-sent before; 409 with "
        "`current_status` for a message that is not failed or bounced."
    ),
    status_code=201,
    responses=documented(401, 403, 404, 409, 422, 503),
)
async def resend_message(
    message_id: uuid.UUID,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("ops"))],
) -> ResendOut:
    messaging: Messaging = request.app.state.messaging
    row, created = await resend.resend(messaging, request.app.state.sessionmaker, message_id)
    if created:
        audit.record(
            session,
            principal,
            "message",
            message_id,
            "resend",
            {"resent_as": str(row.id), "status": row.status, "channel": row.channel},
        )
    else:
        response.status_code = 200
    return ResendOut(created=created, message=MessageOut.model_validate(row, from_attributes=True))
