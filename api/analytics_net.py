"""GET /v1/analytics/net-revenue: each rule's credited orders at placement and net of what
came back (cancellations, returns to origin, refunds), with how its COD orders behaved."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from api.analytics_export import PeriodDep, answer
from api.analytics_overview import PeriodView
from api.deps import SessionDep, require
from api.errors import documented
from services.analytics.net_revenue import net_revenue
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("analytics:read"))]


class NetFigures(BaseModel):
    orders: int = Field(description="Orders credited to the rule, placed in the period")
    outcome_unknown: int = Field(
        description="Of them, orders the read model has no row for: left out of net figures"
    )
    placed_revenue: str = Field(description="Their totals at placement")
    net_revenue: str = Field(
        description="Totals of those not cancelled or returned, less what was refunded"
    )
    refunded: str
    cancelled: int
    rto: int = Field(description="Returned to origin (refused at the door, undeliverable)")
    delivered: int
    rto_rate: float | None = Field(description="rto / (rto + delivered)")
    cod_orders: int = Field(description="Placed as cash on delivery")
    cod_to_prepaid_rate: float | None = Field(description="Of them, switched to prepaid")
    partial_cod_orders: int
    partial_cod_collection_rate: float | None = Field(
        description="Of the partial-COD orders, those whose upfront share was paid"
    )


class RuleNet(BaseModel):
    rule_id: str
    name: str | None
    currencies: dict[str, NetFigures]


class NetRevenue(BaseModel):
    model_config = {"populate_by_name": True}

    period: PeriodView
    rules: list[RuleNet]


def _rows(figures: NetRevenue) -> Iterator[dict[str, Any]]:
    """One row per rule and currency."""
    for rule in figures.rules:
        for currency, values in rule.currencies.items():
            yield {
                "rule_id": rule.rule_id,
                "name": rule.name,
                "currency": currency,
                **values.model_dump(),
            }


@router.get(
    "/net-revenue",
    summary="Each rule's credited orders at placement and net of cancellations, RTO, refunds",
    response_model=NetRevenue,
    response_model_by_alias=True,
    responses={**documented(401, 403, 422), 200: {"content": {"text/csv": {}}}},
)
async def get_net_revenue(
    request: Request, period: PeriodDep, session: SessionDep, _: Reader
) -> Any:
    figures = NetRevenue.model_validate(await net_revenue(session, period))
    return answer(request, figures, _rows, f"net-revenue-{period.start}-{period.end}")
