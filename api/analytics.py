"""Analytics (marketers): what each rule earned over a period, per version, variant, step
and channel, and its A/B tests; every rule's key figures for a list. JSON, or CSV on
``Accept: text/csv``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.analytics_export import CSV, PeriodDep, answer
from api.deps import SessionDep, SettingsDep, require
from api.errors import documented
from api.rule_analytics_models import RuleAnalytics, RuleList, list_rows, rule_rows
from services.analytics import rule_list
from services.analytics import rules as rule_analytics
from services.journeys import rules
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("analytics:read"))]
BasisQuery = Annotated[
    Literal["send", "event"],
    Query(
        description="send: messages by the day they were sent (journeys by the day they "
        "entered) with all that came of them later; event: each figure by the day it happened "
        "(an order by its order date)"
    ),
]
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {CSV: {}}, "description": "JSON, or CSV with Accept: text/csv"}
}


@router.get(
    "/rules",
    summary="Every rule's key figures over a period",
    response_model=RuleList,
    responses={**documented(401, 403, 422), **_CSV},
)
async def list_rule_analytics(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    period: PeriodDep,
    _: Reader,
    basis: BasisQuery = "send",
) -> RuleList | Response:
    found = await rule_list.all_rules(session, settings, period, basis)
    return answer(request, RuleList.model_validate(found), list_rows, "rules")


@router.get(
    "/rules/{rule_id}",
    summary="A rule's results per version, variant, step and channel, and its A/B tests",
    response_model=RuleAnalytics,
    responses={**documented(401, 403, 404, 422), **_CSV},
)
async def get_rule_analytics(
    rule_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    period: PeriodDep,
    _: Reader,
    basis: BasisQuery = "send",
) -> RuleAnalytics | Response:
    rule = await rules.get(session, rule_id)
    found = await rule_analytics.rule_figures(session, settings, rule, period, basis)
    return answer(request, RuleAnalytics.model_validate(found), rule_rows, f"rule-{rule_id}")
