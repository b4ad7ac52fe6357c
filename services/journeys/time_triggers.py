"""Time triggers: who is due for a birthday, anniversary, win-back or replenishment journey.

Nothing waits per customer. An hourly sweep (workflows/time_trigger_sweep.py, started by
the ``sutra-time-triggers`` Temporal Schedule) asks the due queries
(services/journeys/time_trigger_queries.py), one active rule at a time, for the next page
of due customers in index order (keyset paging, so a page costs the same on page 1 and
page 2,000), and claims and starts a journey for each (services/journeys/starts.py).
Every due item carries a deterministic *occurrence* — a birthday's local year, an
inactivity spell's last order, an order line — so the claim makes it one journey per
occurrence however many sweeps see it.

Occurrences whose journey was already started are left out by the queries themselves (an
anti-join on the claims' primary key), so a customer who stays inactive for a year costs
the hourly sweep an index probe, not a claim attempt. Claimed-but-not-started ones (a sweep
cut off between claim and start) are still returned, and claim_and_start starts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.lifecycle import JourneyStart
from contracts.rules import TIME_TRIGGERS, Trigger
from contracts.sweeps import DEFAULT_BATCH, SweepTarget
from db.models import Rule, RuleVersion
from services.journeys.time_trigger_queries import DUE_QUERIES

# --- rules ----------------------------------------------------------------------------


async def targets(session: AsyncSession, only_rules: list[str] | None = None) -> list[SweepTarget]:
    """The active rules with a time trigger, in a fixed order."""
    query = (
        select(Rule.trigger_event, Rule.id)
        .where(Rule.trigger_event.in_(TIME_TRIGGERS), Rule.status == "active")
        .order_by(Rule.trigger_event, Rule.id)
    )
    if only_rules is not None:
        query = query.where(Rule.id.in_(only_rules))
    return [SweepTarget(trigger=t, rule_id=r) for t, r in (await session.execute(query)).all()]


async def active_trigger(session: AsyncSession, rule_id: str) -> Trigger | None:
    """The rule's trigger as of its current version, if the rule is active and time-triggered
    (a rule paused mid-sweep stops getting journeys at the next batch)."""
    row = (
        await session.execute(
            select(Rule.status, RuleVersion.definition)
            .join(
                RuleVersion,
                (RuleVersion.rule_id == Rule.id) & (RuleVersion.version == Rule.version),
            )
            .where(Rule.id == rule_id)
        )
    ).first()
    if row is None or row.status != "active":
        return None
    trigger = Trigger.model_validate(row.definition["trigger"])
    return trigger if trigger.event in TIME_TRIGGERS else None


# --- due items --------------------------------------------------------------------------


@dataclass
class Page:
    starts: list[JourneyStart]
    next_key: str | None  # None: no more due items for this rule


async def due_page(
    session: AsyncSession,
    rule_id: str,
    trigger: Trigger,
    now: datetime,
    after_key: str | None = None,
    limit: int = DEFAULT_BATCH,
) -> Page:
    query = DUE_QUERIES[trigger.event]
    after = json.loads(after_key) if after_key else None
    starts, last = await query(session, rule_id, trigger, now, after, limit)
    return Page(starts, json.dumps(last) if last is not None and len(starts) == limit else None)
