"""GET /v1/analytics/overview: the shop at a glance over a period (marketers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from api.analytics_export import PeriodDep, answer
from api.deps import SessionDep, require
from api.errors import documented
from services.analytics.overview import overview
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("analytics:read"))]


class PeriodView(BaseModel):
    from_: str = Field(alias="from", description="First day, included")
    to: str = Field(description="Last day, included")
    time_zone: str = Field(description="The shop's zone the days are counted in")


class RevenueView(BaseModel):
    orders: int = Field(description="Orders the shop reported placed in the period")
    order_revenue: dict[str, str] = Field(description="Their totals, per currency")
    attributed_orders: int = Field(description="Of them, credited to a Sutra message")
    attributed_revenue: dict[str, str] = Field(description="Their totals, per currency")
    attributed_share: dict[str, float | None] = Field(
        description="attributed_revenue / order_revenue, per currency"
    )


class CartsView(BaseModel):
    abandoned_journeys: int = Field(description="Cart journeys entered in the period")
    recovered: int = Field(description="Of them, ended because the customer ordered")
    recovery_rate: float | None
    recovered_revenue: dict[str, str] = Field(
        description="Orders credited to those journeys' messages, per currency"
    )


class ChannelDeliverability(BaseModel):
    sent: int
    delivered: int
    bounced: int
    complaints: int = Field(description="Spam reports on the messages sent")
    bounce_rate: float | None = Field(description="bounced / sent")
    complaint_rate: float | None = Field(description="complaints / sent")
    failed: int = Field(description="Messages asked for in the period that failed for good")
    suppressed: int = Field(
        description="Messages asked for in the period that send policy held back"
        " (consent, suppression, caps, no channel)"
    )


class DayView(BaseModel):
    date: str
    messages: dict[str, int] = Field(description="Messages sent that day, per channel")
    order_revenue: dict[str, str]
    attributed_revenue: dict[str, str]


class Overview(BaseModel):
    model_config = {"populate_by_name": True}

    period: PeriodView
    revenue: RevenueView
    carts: CartsView
    deliverability: dict[str, ChannelDeliverability] = Field(description="Per channel")
    unsubscribes: dict[str, int] = Field(
        description="Customers who withdrew consent in the period, per channel"
    )
    suppressions: dict[str, int] = Field(
        description="Addresses Sutra stopped messaging in the period, by reason"
    )
    journeys_running: int = Field(description="Journeys entered and not ended, now")
    days: list[DayView]


def _rows(figures: Overview) -> Iterator[dict[str, Any]]:
    """One row per day: messages per channel, order and attributed revenue per currency."""
    currencies = sorted(figures.revenue.order_revenue | figures.revenue.attributed_revenue)
    for day in figures.days:
        row: dict[str, Any] = {"date": day.date}
        row |= {f"sent_{channel}": count for channel, count in day.messages.items()}
        for currency in currencies:
            row[f"order_revenue_{currency}"] = day.order_revenue.get(currency, "0.00")
            row[f"attributed_revenue_{currency}"] = day.attributed_revenue.get(currency, "0.00")
        yield row


@router.get(
    "/overview",
    summary="The shop at a glance: revenue beside Sutra's share, carts, messages, deliverability",
    response_model=Overview,
    response_model_by_alias=True,
    responses={**documented(401, 403, 422), 200: {"content": {"text/csv": {}}}},
)
async def get_overview(request: Request, period: PeriodDep, session: SessionDep, _: Reader) -> Any:
    figures = Overview.model_validate(await overview(session, period))
    return answer(request, figures, _rows, f"overview-{period.start}-{period.end}")
