"""Every rule's key figures over a period, for a dashboard's list: journeys entered,
messages sent, their cost, attributed orders, revenue and ROI. Totals only (the rule's own
page has the unique customers and the steps), so each table is read in one pass that sorts
nothing."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from db.models import Attribution, JourneyEntry, Message, Rule
from services.analytics import rule_queries as q
from services.analytics.period import Period
from services.analytics.rule_queries import Basis, Scope
from services.analytics.rules import figures, unit_costs


async def all_rules(
    session: AsyncSession, settings: Settings, period: Period, basis: Basis
) -> dict[str, Any]:
    listed = list(await session.scalars(select(Rule).order_by(Rule.name, Rule.id)))
    scope = Scope([r.id for r in listed], period, basis)
    sent = await sent_per_channel(session, scope)
    orders = await rule_orders(session, scope)
    entered = await rule_entries(session, scope)
    per_rule: dict[str, dict[str, int]] = defaultdict(dict)
    costs: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for (rule_id, channel), count in sent.items():
        per_rule[rule_id]["sent"] = per_rule[rule_id].get("sent", 0) + count
        for currency, unit in unit_costs(settings, channel).items():
            costs[rule_id][currency] += unit * count
    rules = []
    for rule in listed:
        journeys = entered.get(rule.id, 0)
        found = figures(
            per_rule.get(rule.id), None, orders.get(rule.id), costs.get(rule.id), journeys
        )
        rules.append(
            {
                "rule_id": rule.id,
                "name": rule.name,
                "status": rule.status,
                "version": rule.version,
                "entered": journeys,
                **{
                    k: found[k]
                    for k in (
                        "sent",
                        "conversions",
                        "conversion_rate",
                        "revenue",
                        "discount_cost",
                        "message_cost",
                        "roi",
                    )
                },
            }
        )
    return {"basis": basis, "period": period.describe(), "rules": rules}


async def sent_per_channel(session: AsyncSession, scope: Scope) -> dict[tuple[str, str], int]:
    """Messages sent per rule and channel: all a list of rules needs from the ledger. By
    either basis a message sent in the period is one whose ``sent_at`` is in it (by send
    date its day is its ``sent_at``), which ``ix_messages_rule_sent_at`` answers alone."""
    result = await session.execute(
        select(Message.rule_id, Message.channel, func.count())
        .where(
            Message.rule_id.in_(scope.rule_ids),
            Message.sent_at.is_not(None),
            scope.within(Message.sent_at),
            q.not_a_test(),
        )
        .group_by(Message.rule_id, Message.channel)
    )
    return {(str(rule), str(channel)): count for rule, channel, count in result.all()}


async def rule_orders(session: AsyncSession, scope: Scope) -> dict[str, q.Orders]:
    """Attributed orders per rule: count, revenue and discount per currency."""
    result = await session.execute(
        q.attributed(scope)
        .add_columns(
            Attribution.rule_id,
            Attribution.currency,
            func.count(),
            func.sum(Attribution.revenue),
            func.sum(Attribution.discount),
        )
        .group_by(Attribution.rule_id, Attribution.currency)
    )
    found: dict[str, q.Orders] = {}
    for rule, currency, count, revenue, discount in result.all():
        orders = found.setdefault(str(rule), q.Orders(0, 0, {}, {}))
        orders.conversions += count
        assert orders.revenue is not None
        assert orders.discount is not None
        orders.revenue[currency] = revenue
        orders.discount[currency] = discount
    return found


async def rule_entries(session: AsyncSession, scope: Scope) -> dict[str, int]:
    """Journeys entered per rule in the period (either basis: by the day they entered)."""
    result = await session.execute(
        select(JourneyEntry.rule_id, func.count())
        .where(
            JourneyEntry.rule_id.in_(scope.rule_ids),
            JourneyEntry.test.is_(False),
            scope.within(JourneyEntry.entered_at),
        )
        .group_by(JourneyEntry.rule_id)
    )
    return {str(rule): count for rule, count in result.all()}
