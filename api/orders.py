"""Orders (ops and backend): the list from the orders read model, live state from the order
workflow, and transitions signalled to the order workflow, whose answer (applied, or
refused with the status that made it impossible) is read back (services/orders/moves.py).

A delivery ops record by hand is also taken in as an ``order.delivered`` event (id
``ops:{order_id}:delivered``), exactly as if the shop had sent it: post-purchase journeys
and replenishment clocks start from it. The order workflow ignores it, being delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Self

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.deps import SessionDep, SettingsDep, TemporalDep, require
from api.errors import documented
from api.workflow_state import query_state
from config.settings import Settings
from contracts import workflow_ids
from contracts.errors import Conflict, NotFound, ServiceUnavailable
from contracts.events import EVENT_ADAPTER
from contracts.orders import (
    HistoryEntry,
    OrderState,
    OrderStatus,
    PaymentLinkInfo,
    PaymentStatus,
    PaymentType,
    RefundInfo,
    TransitionRequest,
)
from contracts.payment_policy import quantize
from services.intake.service import ingest
from services.orders import moves, read_model
from services.platform import audit
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/orders", tags=["orders"])
_TIMEOUT = timedelta(seconds=10)


class OrderView(BaseModel):
    order_id: str
    status: OrderStatus
    payment_type: str | None
    payment_status: str
    currency: str | None
    total: Decimal | None
    discount: Decimal
    upfront_amount: Decimal | None
    remaining_amount: Decimal | None
    paid_amount: Decimal
    payment_link: str | None
    pay_by: datetime | None
    payment_links: list[PaymentLinkInfo]
    refund: RefundInfo | None
    customer_id: str | None
    cart_id: str | None
    tracking_url: str | None
    carrier: str | None
    on_hold: bool
    sla_breached: bool
    cancel_reason: str | None
    rto_reason: str | None
    reminders_sent: int
    refunds_reported: dict[str, Decimal] = Field(
        description="Refunds the shop or the provider reported, by refund id"
    )
    reopened: int = Field(description="Runs before this one: reopened after it had ended")
    history: list[HistoryEntry]


class OrderRow(BaseModel):
    """An order as its workflow last wrote it to the read model."""

    order_id: str
    customer_id: str
    cart_id: str | None
    payment_type: str
    placed_payment_type: str = Field(description="As chosen at checkout")
    status: str
    payment_status: str
    currency: str
    total: Decimal
    discount: Decimal
    upfront_amount: Decimal | None
    remaining_amount: Decimal | None
    paid_amount: Decimal
    refunded_amount: Decimal
    city: str | None
    postal_code: str | None
    country: str | None
    placed_at: datetime
    confirmed_at: datetime | None
    paid_at: datetime | None = Field(description="First paid online (not cash at the door)")
    cancelled_at: datetime | None
    delivered_at: datetime | None
    rto_at: datetime | None
    cancel_reason: str | None
    reminders_sent: int
    cod_confirmation_asked: bool
    cod_confirmation_answer: str | None = Field(description="yes | no; null: no answer")
    converted_to_prepaid: bool
    on_hold: bool
    sla_breached: bool
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _in_minor_units(self) -> Self:
        # Stored at four places for every currency; shown as the order's other amounts are.
        for name in _AMOUNTS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, quantize(value, self.currency))
        return self


_AMOUNTS = (
    "total",
    "discount",
    "upfront_amount",
    "remaining_amount",
    "paid_amount",
    "refunded_amount",
)


class OrderPage(BaseModel):
    orders: list[OrderRow]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null when there is none"
    )


def _view(state: OrderState) -> OrderView:
    return OrderView(
        **state.model_dump(
            include={
                "order_id",
                "status",
                "payment_type",
                "payment_status",
                "currency",
                "total",
                "discount",
                "upfront_amount",
                "remaining_amount",
                "paid_amount",
                "payment_link",
                "pay_by",
                "refund",
                "customer_id",
                "cart_id",
                "tracking_url",
                "carrier",
                "on_hold",
                "sla_breached",
                "cancel_reason",
                "rto_reason",
                "reminders_sent",
                "refunds_reported",
                "reopened",
                "history",
            }
        ),
        payment_links=state.links,
    )


async def _state(temporal: Client, order_id: str) -> OrderState:
    return await query_state(
        temporal,
        workflow_ids.order(order_id),
        OrderState,
        what="order",
        key=order_id,
        rpc_timeout=_TIMEOUT,
    )


@router.get(
    "",
    summary="Orders from the read model, newest placed first",
    responses=documented(401, 403, 422),
)
async def list_orders(
    session: SessionDep,
    _: Annotated[Principal, Depends(require("ops"))],
    status: OrderStatus | None = None,
    payment_type: PaymentType | None = None,
    payment_status: PaymentStatus | None = None,
    customer_id: Annotated[str | None, Query(max_length=128, pattern=r"^[!-~]+$")] = None,
    sla_breached: bool | None = None,
    cursor: Annotated[
        str | None, Query(max_length=400, description="`next_cursor` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> OrderPage:
    filters: dict[str, object | None] = {
        "status": status,
        "payment_type": payment_type,
        "payment_status": payment_status,
        "customer_id": customer_id,
        "sla_breached": sla_breached,
    }
    rows, next_cursor = await read_model.newest_first(
        session, filters=filters, cursor=cursor, limit=limit
    )
    return OrderPage(
        orders=[OrderRow.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/{order_id}",
    summary="An order's live state from its workflow",
    responses=documented(401, 403, 404, 503),
)
async def get_order(
    order_id: str, temporal: TemporalDep, _: Annotated[Principal, Depends(require("ops"))]
) -> OrderView:
    state = await _state(temporal, order_id)
    if state.placed_at is None:
        raise NotFound(f"order {order_id!r} has events but has not been placed")
    return _view(state)


@router.post(
    "/{order_id}/transitions",
    summary="Move an order (refused with 409 and the current status when impossible)",
    responses=documented(400, 401, 403, 404, 409, 422, 503),
)
async def transition_order(
    order_id: str,
    body: TransitionRequest,
    temporal: TemporalDep,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("ops"))],
) -> OrderView:
    request = body.model_copy(update={"by": principal.name})
    try:
        state = await moves.move(temporal, order_id, request, within=settings.order_update_timeout)
    except moves.Unanswered as exc:
        # The signal is in the order's history: the move takes effect once a worker runs,
        # so the client must look before it retries.
        waited = int(settings.order_update_timeout.total_seconds())
        raise ServiceUnavailable(
            f"no worker answered the move to {body.to} within {waited} s (the order workers"
            f" are down or behind); it takes effect when they run: read"
            f" GET /v1/orders/{order_id} before retrying",
            headers={"Retry-After": str(max(1, min(waited, 30)))},
        ) from exc
    except moves.Refused as exc:
        if exc.status == OrderStatus.delivered.value:
            await _delivered_by_ops(session, settings, order_id)  # a retried request
        raise Conflict(exc.message, current_status=exc.status) from exc
    except moves.Closed as exc:
        # A finished order's workflow takes no signals, but still says where it ended.
        final = await _state(temporal, order_id)
        current = final.status.value
        raise Conflict(
            f"order {order_id} is {current}, a final status: it cannot go to {body.to}",
            current_status=current,
        ) from exc
    if state.status is OrderStatus.delivered:
        await _delivered_by_ops(session, settings, order_id)
    audit.record(
        session, principal, "order", order_id, "transition", audit.order_transition(state, body)
    )
    return _view(state)


async def _delivered_by_ops(session: AsyncSession, settings: Settings, order_id: str) -> None:
    event = EVENT_ADAPTER.validate_python(
        {
            "id": f"ops:{order_id}:delivered",
            "type": "order.delivered",
            "occurred_at": datetime.now(UTC),
            "data": {"order_id": order_id},
        }
    )
    await ingest(session, [event], settings=settings, api_key_id=None)
    await session.commit()  # now: a 409 that follows must not roll it back
