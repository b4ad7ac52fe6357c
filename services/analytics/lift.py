"""Holdout lift: what a rule *caused*. Per version, the journeys that got its messages
(treated) against those of its holdout group (held out: entered, tracked for the goal, sent
nothing), over journeys entered in a period.

A journey converts when an order reaches its goal within the rule's ``attribution_window``
after entry (``journey_orders.converted``), measured the same way in both groups; the
order's credit to a message (``attributions``) plays no part here. The lift is the
difference of the two conversion rates with a 95% confidence interval from the normal
approximation to the difference of two independent proportions (unpooled standard error);
README "Attribution and holdouts" says why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.fields import minor_units
from contracts.rules import RuleDefinition
from db.models import JourneyEntry, JourneyOrder, RuleVersion
from services.analytics.period import Period
from services.journeys import rules

# Fewer journeys than this in either group and the normal approximation is not to be
# trusted: the lift is "collecting" and no interval is given.
MIN_SAMPLE = 30
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


@dataclass
class Group:
    journeys: int = 0
    conversions: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.conversions / self.journeys if self.journeys else None


@dataclass
class VersionLift:
    version: int
    holdout_percent: int
    treated: Group
    held_out: Group
    status: str  # no_holdout | collecting | measured
    absolute: float | None = None
    absolute_ci: tuple[float, float] | None = None
    relative: float | None = None
    relative_ci: tuple[float, float] | None = None
    incremental_revenue: dict[str, Decimal] = field(default_factory=dict)


def measure(version: int, percent: int, treated: Group, held_out: Group) -> VersionLift:
    """The lift of one version from its two groups."""
    if held_out.journeys == 0:
        return VersionLift(version, percent, treated, held_out, "no_holdout")
    if treated.journeys < MIN_SAMPLE or held_out.journeys < MIN_SAMPLE:
        return VersionLift(version, percent, treated, held_out, "collecting")
    p_t, p_h = treated.conversions / treated.journeys, held_out.conversions / held_out.journeys
    diff = p_t - p_h
    error = math.sqrt(p_t * (1 - p_t) / treated.journeys + p_h * (1 - p_h) / held_out.journeys)
    low, high = diff - Z_95 * error, diff + Z_95 * error
    lift = VersionLift(
        version, percent, treated, held_out, "measured", diff, (low, high), None, None
    )
    if p_h > 0:
        lift.relative, lift.relative_ci = diff / p_h, (low / p_h, high / p_h)
    for currency in sorted(set(treated.revenue) | set(held_out.revenue)):
        # (treated per journey - held out per journey) x treated journeys, divided last.
        held = held_out.revenue.get(currency, Decimal(0)) * treated.journeys / held_out.journeys
        exponent = Decimal(1).scaleb(-minor_units(currency))
        lift.incremental_revenue[currency] = (
            treated.revenue.get(currency, Decimal(0)) - held
        ).quantize(exponent, rounding=ROUND_HALF_UP)
    return lift


async def rule_lift(session: AsyncSession, rule_id: str, period: Period) -> list[VersionLift]:
    """Every version of the rule with journeys entered in the period, oldest first (404
    for an unknown rule). Test runs are left out."""
    await rules.get(session, rule_id)
    scope = (
        JourneyEntry.rule_id == rule_id,
        JourneyEntry.test.is_(False),
        JourneyEntry.entered_at >= period.start_utc,
        JourneyEntry.entered_at < period.end_utc,
    )
    groups: dict[tuple[int, bool], Group] = defaultdict(Group)
    entered = select(JourneyEntry.rule_version, JourneyEntry.holdout, func.count()).where(*scope)
    for version, holdout, count in await session.execute(
        entered.group_by(JourneyEntry.rule_version, JourneyEntry.holdout)
    ):
        groups[(version, holdout)].journeys = count
    converted = (
        select(
            JourneyEntry.rule_version,
            JourneyEntry.holdout,
            func.count(func.distinct(JourneyEntry.id)),
        )
        .join(JourneyOrder, JourneyOrder.entry_id == JourneyEntry.id)
        .where(*scope, JourneyOrder.converted.is_(True))
        .group_by(JourneyEntry.rule_version, JourneyEntry.holdout)
    )
    for version, holdout, count in await session.execute(converted):
        groups[(version, holdout)].conversions = count
    revenue = (
        select(
            JourneyEntry.rule_version,
            JourneyEntry.holdout,
            JourneyOrder.currency,
            func.sum(JourneyOrder.revenue),
        )
        .join(JourneyOrder, JourneyOrder.entry_id == JourneyEntry.id)
        .where(*scope, JourneyOrder.converted.is_(True))
        .group_by(JourneyEntry.rule_version, JourneyEntry.holdout, JourneyOrder.currency)
    )
    for version, holdout, currency, total in await session.execute(revenue):
        groups[(version, holdout)].revenue[currency] = Decimal(total)
    versions = sorted({version for version, _ in groups})
    percents = await _percents(session, rule_id, versions)
    return [measure(v, percents.get(v, 0), groups[(v, False)], groups[(v, True)]) for v in versions]


async def _percents(session: AsyncSession, rule_id: str, versions: list[int]) -> dict[int, int]:
    rows = await session.execute(
        select(RuleVersion.version, RuleVersion.definition).where(
            RuleVersion.rule_id == rule_id, RuleVersion.version.in_(versions)
        )
    )
    return {
        version: RuleDefinition.model_validate(definition).holdout_percent
        for version, definition in rows
    }


def money(amounts: dict[str, Decimal]) -> dict[str, str]:
    """Amounts per currency as decimal strings in the currency's minor units."""
    out: dict[str, str] = {}
    for currency, amount in sorted(amounts.items()):
        exponent = Decimal(1).scaleb(-minor_units(currency))
        out[currency] = str(amount.quantize(exponent, rounding=ROUND_HALF_UP))
    return out


def describe(lift: VersionLift) -> dict[str, Any]:
    """One version's lift as the API answers it."""

    def group(g: Group) -> dict[str, Any]:
        return {
            "journeys": g.journeys,
            "conversions": g.conversions,
            "conversion_rate": g.rate,
            "revenue": money(g.revenue),
        }

    def interval(ci: tuple[float, float] | None) -> dict[str, float] | None:
        return None if ci is None else {"low": ci[0], "high": ci[1]}

    return {
        "version": lift.version,
        "holdout_percent": lift.holdout_percent,
        "status": lift.status,
        "treated": group(lift.treated),
        "held_out": group(lift.held_out),
        "absolute_lift": lift.absolute,
        "absolute_lift_ci": interval(lift.absolute_ci),
        "relative_lift": lift.relative,
        "relative_lift_ci": interval(lift.relative_ci),
        "incremental_revenue": money(lift.incremental_revenue),
    }
