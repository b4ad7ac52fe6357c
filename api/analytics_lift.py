"""Holdout lift (marketers): per rule version, treated against held-out journeys, the lift
in conversion rate with its 95% confidence interval, and the incremental revenue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.analytics_export import PeriodDep, answer
from api.deps import SessionDep, require
from api.errors import documented
from services.analytics.lift import MIN_SAMPLE, describe, rule_lift
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("analytics:read"))]


class LiftGroup(BaseModel):
    journeys: int = Field(description="Journeys entered in the period (test runs left out)")
    conversions: int = Field(description="Journeys whose goal order came within the window")
    conversion_rate: float | None
    revenue: dict[str, str] = Field(description="Revenue of those orders, per currency")


class Interval(BaseModel):
    low: float
    high: float


class VersionLiftOut(BaseModel):
    version: int
    holdout_percent: int
    status: str = Field(
        description="measured | collecting (fewer than min_sample journeys in a group: no "
        "lift yet) | no_holdout (no held-out journeys)"
    )
    treated: LiftGroup
    held_out: LiftGroup
    absolute_lift: float | None = Field(description="Treated rate minus held-out rate")
    absolute_lift_ci: Interval | None = Field(description="95%, normal approximation")
    relative_lift: float | None = Field(description="Absolute lift / held-out rate")
    relative_lift_ci: Interval | None
    incremental_revenue: dict[str, str] = Field(
        description="(treated revenue per journey - held-out revenue per journey) x treated "
        "journeys, per currency"
    )


class RuleLiftOut(BaseModel):
    rule_id: str
    period: dict[str, str]
    min_sample: int
    versions: list[VersionLiftOut]


def _rows(figures: RuleLiftOut) -> Iterator[dict[str, Any]]:
    for v in figures.versions:
        base = {
            "rule_id": figures.rule_id,
            "from": figures.period["from"],
            "to": figures.period["to"],
            "version": v.version,
            "holdout_percent": v.holdout_percent,
            "status": v.status,
            "treated_journeys": v.treated.journeys,
            "treated_conversions": v.treated.conversions,
            "treated_conversion_rate": v.treated.conversion_rate,
            "held_out_journeys": v.held_out.journeys,
            "held_out_conversions": v.held_out.conversions,
            "held_out_conversion_rate": v.held_out.conversion_rate,
            "absolute_lift": v.absolute_lift,
            "absolute_lift_ci_low": v.absolute_lift_ci.low if v.absolute_lift_ci else None,
            "absolute_lift_ci_high": v.absolute_lift_ci.high if v.absolute_lift_ci else None,
            "relative_lift": v.relative_lift,
            "relative_lift_ci_low": v.relative_lift_ci.low if v.relative_lift_ci else None,
            "relative_lift_ci_high": v.relative_lift_ci.high if v.relative_lift_ci else None,
        }
        currencies: list[str | None] = [*sorted({*v.treated.revenue, *v.held_out.revenue})]
        for currency in currencies or [None]:
            yield {
                **base,
                "currency": currency,
                "treated_revenue": v.treated.revenue.get(currency or ""),
                "held_out_revenue": v.held_out.revenue.get(currency or ""),
                "incremental_revenue": v.incremental_revenue.get(currency or ""),
            }


@router.get(
    "/rules/{rule_id}/lift",
    summary="A rule's holdout lift per version (JSON, or CSV with Accept: text/csv)",
    response_model=RuleLiftOut,
    responses=documented(401, 403, 404, 422),
)
async def get_rule_lift(
    rule_id: str, request: Request, period: PeriodDep, session: SessionDep, _: Reader
) -> RuleLiftOut | Response:
    versions = await rule_lift(session, rule_id, period)
    figures = RuleLiftOut(
        rule_id=rule_id,
        period=period.describe(),
        min_sample=MIN_SAMPLE,
        versions=[VersionLiftOut.model_validate(describe(v)) for v in versions],
    )
    return answer(request, figures, _rows, f"lift-{rule_id}")
