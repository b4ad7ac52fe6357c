"""The journeys behind rule analytics: entered and ended per variant, version and rule, as
totals and unique customers, exits by reason (rule_queries.py has the dates they count
by)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal_column, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import JourneyEntry
from services.analytics.rule_queries import Level, Scope

# (rule, version | None, variant | None, level): VARIANT, VERSION or RULE
JourneyKey = tuple[str, Level, int | None, str | None]


async def journeys(session: AsyncSession, scope: Scope) -> dict[JourneyKey, dict[str, Any]]:
    """Journeys entered and ended, per variant, version and rule: totals and customers,
    exits by reason."""
    entered_in = scope.within(JourneyEntry.entered_at)
    if scope.basis == "send":
        exited_in: ColumnElement[bool] = and_(entered_in, JourneyEntry.exit_reason.is_not(None))
        where: ColumnElement[bool] = entered_in
    else:
        exited_in = and_(
            scope.within(JourneyEntry.exited_at), JourneyEntry.exit_reason.is_not(None)
        )
        where = or_(entered_in, exited_in)
    rule, version, variant = JourneyEntry.rule_id, JourneyEntry.rule_version, JourneyEntry.variant
    reason = func.coalesce(JourneyEntry.exit_reason, literal_column("''"))
    sets = func.grouping_sets(
        tuple_(rule, version, variant),
        tuple_(rule, version),
        tuple_(rule),
        tuple_(rule, version, variant, reason),
        tuple_(rule, version, reason),
        tuple_(rule, reason),
    )
    result = await session.execute(
        select(
            rule,
            version,
            variant,
            reason,
            func.grouping(version, variant, reason),
            func.count().filter(entered_in),
            func.count(func.distinct(JourneyEntry.customer_id)).filter(entered_in),
            func.count().filter(exited_in),
            func.count(func.distinct(JourneyEntry.customer_id)).filter(exited_in),
        )
        .where(rule.in_(scope.rule_ids), JourneyEntry.test.is_(False), where)
        .group_by(sets)
    )
    found: dict[JourneyKey, dict[str, Any]] = {}
    for rid, ver, var, why, bits, entered, entered_c, exited, exited_c in result.all():
        level = {0b000: Level.VARIANT, 0b010: Level.VERSION, 0b110: Level.RULE}[bits & 0b110]
        row = found.setdefault(
            (rid, level, ver, var),
            {"entered": 0, "entered_customers": 0, "exited": {}, "exited_customers": {}},
        )
        if bits & 0b001:  # reason rolled up: the entries themselves
            row["entered"], row["entered_customers"] = entered, entered_c
        elif why and exited:
            row["exited"][why] = exited
            row["exited_customers"][why] = exited_c
    return found
