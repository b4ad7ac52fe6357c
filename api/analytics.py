"""Analytics (marketers): how each rule version and variant performs, and its A/B tests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import SessionDep, require
from api.errors import documented
from services.journeys import rules
from services.journeys.analytics import rule_analytics
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("analytics:read"))]


class ChannelCounts(BaseModel):
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    failed: int


class VariantAnalytics(BaseModel):
    variant: str | None = Field(description="null: journeys that have not reached a split")
    entered: int
    exited: dict[str, int] = Field(description="Journeys ended, by reason")
    messages: dict[str, ChannelCounts] = Field(description="Per channel")
    conversions: int
    conversion_rate: float | None = Field(description="conversions / entered")
    revenue: dict[str, str] = Field(description="Attributed revenue per currency")
    discount_cost: dict[str, str] = Field(description="Discounts on attributed orders")


class VersionAnalytics(BaseModel):
    version: int
    variants: list[VariantAnalytics]


class ExperimentVariant(BaseModel):
    name: str
    journeys: int
    conversions: int
    conversion_rate: float
    revenue: dict[str, str]
    p_value: float | None = Field(description="Best variant vs this one; two-sided z-test")


class ExperimentAnalytics(BaseModel):
    version: int
    path: str = Field(description="The split step, e.g. '0'")
    weights: dict[str, int]
    status: str = Field(description="running | decided (a decision is final)")
    winner: str | None
    promoted: bool = Field(description="Every later journey is sent to the winner")
    decided_at: datetime | None
    decision: dict[str, Any] | None = Field(description="The figures it was decided on")
    confidence: float
    min_sample: int
    best: str | None = Field(description="The variant converting best now")
    sampled: bool = Field(description="Every variant has min_sample journeys")
    verdict: str
    variants: list[ExperimentVariant]


class RuleAnalytics(BaseModel):
    rule_id: str
    versions: list[VersionAnalytics]
    experiments: list[ExperimentAnalytics]


@router.get(
    "/rules/{rule_id}",
    summary="A rule's results per version and variant, and its A/B tests",
    responses=documented(401, 403, 404),
)
async def get_rule_analytics(rule_id: str, session: SessionDep, _: Reader) -> RuleAnalytics:
    await rules.get(session, rule_id)
    return RuleAnalytics.model_validate(await rule_analytics(session, rule_id))
