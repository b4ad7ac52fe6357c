"""Payments analytics (marketers): orders, cancellations, RTO and revenue by payment type,
partial-COD payment, COD confirmations and conversions, and the places parcels come back
from; JSON, or CSV on ``Accept: text/csv``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.analytics_export import PeriodDep, answer
from api.deps import SessionDep, require
from api.errors import documented
from services.analytics import payments
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("analytics:read"))]


class PaymentTypeFigures(BaseModel):
    payment_type: str = Field(description="As chosen at checkout")
    orders: int
    cancelled: int
    cancellation_rate: float | None = Field(description="cancelled / orders")
    delivered: int
    rto: int
    rto_rate: float | None = Field(description="rto / (delivered + rto); null before any")
    revenue: dict[str, str] = Field(description="Totals as placed, per currency")
    net_revenue: dict[str, str] = Field(
        description="Per currency, without cancelled and returned orders, less discounts "
        "and refunds"
    )


class PartialCodFigures(BaseModel):
    orders: int
    upfront_asked: int = Field(description="Orders asked for a positive upfront amount")
    upfront_paid: int
    upfront_paid_rate: float | None = Field(description="upfront_paid / upfront_asked")
    median_seconds_to_pay: float | None = Field(description="From placement to the upfront")
    p90_seconds_to_pay: float | None
    reminders_to_pay: dict[str, int] = Field(
        description="Paid orders by the number of reminders sent before they paid"
    )


class CodFigures(BaseModel):
    orders: int
    confirmations_asked: int
    confirmations_answered: int
    answered_yes: int
    answered_no: int
    confirmation_answer_rate: float | None = Field(
        description="confirmations_answered / confirmations_asked"
    )
    converted_to_prepaid: int = Field(description="Took the prepay offer")
    conversion_rate: float | None = Field(description="converted_to_prepaid / orders")


class PlaceFigures(BaseModel):
    place: str
    delivered_or_rto: int
    rto: int
    rto_rate: float


class PaymentsAnalytics(BaseModel):
    period: dict[str, str] = Field(description="from, to (included) and the shop's time zone")
    min_orders: int = Field(description="Delivered-or-RTO orders a place needs to be ranked")
    payment_types: list[PaymentTypeFigures]
    partial_cod: PartialCodFigures
    cod: CodFigures
    rto_by_city: list[PlaceFigures] = Field(description="The ten worst, by RTO rate")
    rto_by_postal_code: list[PlaceFigures] = Field(description="The ten worst, by RTO rate")


def _rows(figures: PaymentsAnalytics) -> Iterator[dict[str, Any]]:
    """One line per figure: section, the group it is about, the figure, its currency."""

    def line(section: str, group: str, figure: str, value: Any, currency: str = "") -> Any:
        return {
            "section": section,
            "group": group,
            "figure": figure,
            "currency": currency,
            "value": value,
        }

    for key, value in figures.period.items():
        yield line("period", "", key, value)
    yield line("period", "", "min_orders", figures.min_orders)
    for kind in figures.payment_types:
        for name, value in kind.model_dump(exclude={"payment_type"}).items():
            if isinstance(value, dict):
                for currency, amount in value.items():
                    yield line("payment_type", kind.payment_type, name, amount, currency)
            else:
                yield line("payment_type", kind.payment_type, name, value)
    for name, value in figures.partial_cod.model_dump(exclude={"reminders_to_pay"}).items():
        yield line("partial_cod", "", name, value)
    for reminders, count in figures.partial_cod.reminders_to_pay.items():
        yield line("partial_cod", f"{reminders} reminders", "paid", count)
    for name, value in figures.cod.model_dump().items():
        yield line("cod", "", name, value)
    for section in ("rto_by_city", "rto_by_postal_code"):
        places: list[PlaceFigures] = getattr(figures, section)
        for place in places:
            for name in ("delivered_or_rto", "rto", "rto_rate"):
                yield line(section, place.place, name, getattr(place, name))


@router.get(
    "/payments",
    response_model=PaymentsAnalytics,
    summary="Payments: by payment type, partial COD, COD, and the worst places for RTO",
    responses=documented(401, 403, 422),
)
async def get_payments_analytics(
    request: Request,
    session: SessionDep,
    _: Reader,
    period: PeriodDep,
    min_orders: Annotated[
        int,
        Query(
            ge=1,
            le=1_000_000,
            description="Delivered-or-RTO orders a city or postal code needs in the period "
            "to be ranked",
        ),
    ] = payments.MIN_PLACE_ORDERS,
) -> PaymentsAnalytics | Response:
    figures = PaymentsAnalytics.model_validate(
        await payments.payments(session, period, min_orders=min_orders)
    )
    return answer(request, figures, _rows, "payments")
