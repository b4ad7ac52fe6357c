"""What each rule earned over a period: per version, variant, step and channel, the
messages and what came of them (rule_queries.py reads them), their cost, the orders
attributed to them and the return; and every rule's key figures for a list.

Money is per currency (Sutra never converts): revenue and discounts are the attributed
orders' (``attributions``, as the attribution model wrote them), message cost is the
messages sent times the channel's unit cost (``SUTRA_MESSAGE_COSTS``), ROI is
``(revenue - discount - cost) / cost`` in each currency that has a cost.
"""

from __future__ import annotations

import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from db.models import Rule, RuleVersion
from services.analytics import rule_experiments, rule_journeys
from services.analytics import rule_queries as q
from services.analytics.period import Period
from services.analytics.rule_queries import Basis, Key, Level, Scope

CENT = Decimal("0.0001")
_PARENTS = (Level.STEP, Level.VARIANT_CHANNEL, Level.VARIANT, Level.VERSION, Level.RULE)


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _parent(key: Key, level: Level) -> Key:
    rule, _, version, variant, step, channel = key
    return (
        rule,
        level,
        None if level == Level.RULE else version,
        variant if level not in (Level.VERSION, Level.RULE) else None,
        step if level == Level.STEP else None,
        channel if level == Level.VARIANT_CHANNEL else None,
    )


def unit_costs(settings: Settings, channel: str | None) -> dict[str, Decimal]:
    costs = {str(name): units for name, units in settings.message_costs.items()}
    return costs.get(channel or "", {})


def _costs(settings: Settings, found: dict[Key, dict[str, int]]) -> dict[Key, dict[str, Decimal]]:
    """Messages sent times each channel's unit cost, per level (a parent sums its channels)."""
    costs: dict[Key, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for key, figures in found.items():
        if key[1] != Level.STEP_CHANNEL:
            continue
        for currency, unit in unit_costs(settings, key[5]).items():
            cost = unit * figures["sent"]
            for target in (key, *(_parent(key, level) for level in _PARENTS)):
                costs[target][currency] += cost
    return costs


def figures(
    messages: dict[str, int] | None,
    reactions: dict[str, int] | None,
    orders: q.Orders | None,
    cost: dict[str, Decimal] | None,
    reached_by: int | None = None,
) -> dict[str, Any]:
    """One level's figures. ``reached_by``: what the conversion rate divides by (entered
    journeys for a variant and above; customers sent to for a step or channel)."""
    m = messages or {}
    r = reactions or {}
    orders = orders or q.Orders(0, 0, {}, {})
    cost = cost or {}
    counts: dict[str, Any] = {s: m.get(s, 0) for s in q.STATUSES}
    unique: dict[str, Any] = {s: m.get(f"{s}:customers", 0) for s in q.STATUSES}
    for part, reasons in (("suppressed", q.SUPPRESSED), ("deferred", q.DEFERRED)):
        counts[part] = {x: m.get(f"{part}.{x}", 0) for x in reasons}
        unique[part] = {x: m.get(f"{part}.{x}:customers", 0) for x in reasons}
    for kind in ("unsubscribes", "complaints"):
        counts[kind] = r.get(kind, 0)
        unique[kind] = r.get(f"{kind}:customers", 0)
    recipients = unique["sent"]
    revenue = orders.revenue or {}
    discount = orders.discount or {}
    base = recipients if reached_by is None else reached_by
    roi: dict[str, float | None] = {}
    for currency in sorted({*revenue, *cost}):
        spent = cost.get(currency, Decimal(0))
        gained = revenue.get(currency, Decimal(0)) - discount.get(currency, Decimal(0))
        roi[currency] = round(float((gained - spent) / spent), 4) if spent else None
    return {
        **counts,
        "customers": unique,
        "recipients": recipients,
        "conversions": orders.conversions,
        "converted_customers": orders.customers,
        "conversion_rate": orders.conversions / base if base else None,
        "revenue": {c: _money(v) for c, v in sorted(revenue.items())},
        "revenue_per_recipient": {
            c: _money(v / recipients) for c, v in sorted(revenue.items()) if recipients
        },
        "discount_cost": {c: _money(v) for c, v in sorted(discount.items())},
        "message_cost": {c: _money(v) for c, v in sorted(cost.items())},
        "roi": roi,
    }


def _step_order(step: str | None) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"\.", step or "")]


class _Found:
    """Every query's answer for a scope, read by key."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def load(self, session: AsyncSession, scope: Scope) -> _Found:
        self.messages = await q.messages(session, scope)
        self.reactions = await q.reactions(session, scope)
        self.orders = await q.conversions(session, scope)
        self.journeys = await rule_journeys.journeys(session, scope)
        self.costs = _costs(self.settings, self.messages)
        return self

    def at(self, key: Key, reached_by: int | None = None) -> dict[str, Any]:
        return figures(
            self.messages.get(key),
            self.reactions.get(key),
            self.orders.get(key),
            self.costs.get(key),
            reached_by,
        )

    def journey(self, rule: str, level: Level, version: int | None, variant: str | None) -> Any:
        return self.journeys.get(
            (rule, level, version, variant),
            {"entered": 0, "entered_customers": 0, "exited": {}, "exited_customers": {}},
        )

    def keys(self, level: Level) -> set[Key]:
        return {k for source in (self.messages, self.orders) for k in source if k[1] == level}

    def level_total(
        self, rule: str, level: Level, version: int | None, variant: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        journey = self.journey(rule, level, version, variant)
        key: Key = (rule, level, version, variant, None, None)
        return journey, self.at(key, reached_by=journey["entered"])


async def rule_figures(
    session: AsyncSession, settings: Settings, rule: Rule, period: Period, basis: Basis
) -> dict[str, Any]:
    found = await _Found(settings).load(session, Scope([rule.id], period, basis))
    versions = list(
        await session.scalars(
            select(RuleVersion).where(RuleVersion.rule_id == rule.id).order_by(RuleVersion.version)
        )
    )
    variants: dict[int, set[str | None]] = defaultdict(set)
    for _, level, version, variant in found.journeys:
        if level == Level.VARIANT and version is not None:
            variants[version].add(variant)
    for key in found.keys(Level.VARIANT):
        if key[2] is not None:
            variants[key[2]].add(key[3])
    steps = found.keys(Level.STEP_CHANNEL)
    journey, totals = found.level_total(rule.id, Level.RULE, None, None)
    return {
        "rule_id": rule.id,
        "name": rule.name,
        "basis": basis,
        "period": period.describe(),
        **_journey_fields(journey),
        "totals": totals,
        "versions": [
            _version(found, rule.id, v.version, variants[v.version], steps) for v in versions
        ],
        "experiments": [
            block for v in versions for block in await rule_experiments.blocks(session, rule.id, v)
        ],
    }


def _journey_fields(journey: dict[str, Any]) -> dict[str, Any]:
    return {k: journey[k] for k in ("entered", "entered_customers", "exited", "exited_customers")}


def _version(
    found: _Found, rule_id: str, version: int, variants: set[str | None], steps: set[Key]
) -> dict[str, Any]:
    journey, totals = found.level_total(rule_id, Level.VERSION, version, None)
    return {
        "version": version,
        **_journey_fields(journey),
        "totals": totals,
        "variants": [
            _variant(found, rule_id, version, name, steps)
            for name in sorted(variants, key=lambda n: n or "")
        ],
    }


def _variant(
    found: _Found, rule_id: str, version: int, variant: str | None, steps: set[Key]
) -> dict[str, Any]:
    journey, totals = found.level_total(rule_id, Level.VARIANT, version, variant)
    channels = {
        key[5]: found.at(key)
        for key in sorted(found.keys(Level.VARIANT_CHANNEL), key=lambda k: k[5] or "")
        if key[2] == version and key[3] == variant and key[5] is not None
    }
    mine = [k for k in steps if k[2] == version and k[3] == variant]
    paths = sorted({k[4] for k in mine}, key=_step_order)
    return {
        "variant": variant,
        **_journey_fields(journey),
        # The figures this endpoint answered with before steps and periods (kept as they were).
        "messages": {
            ch: {s: f[s] for s in q.STATUSES} for ch, f in channels.items() if ch != q.NO_CHANNEL
        },
        "conversions": totals["conversions"],
        "conversion_rate": totals["conversion_rate"],
        "revenue": totals["revenue"],
        "discount_cost": totals["discount_cost"],
        "totals": totals,
        "channels": channels,
        "steps": [
            {
                "step": path,
                "totals": found.at((rule_id, Level.STEP, version, variant, path, None)),
                "channels": {
                    k[5]: found.at(k)
                    for k in sorted(mine, key=lambda k: k[5] or "")
                    if k[4] == path and k[5] is not None
                },
            }
            for path in paths
        ],
    }
