"""Journey admission: which rule (and which version of it) a journey enters, and its exit.

A journey pins the version it entered with (``journey_entries``), so editing a rule never
changes a running journey's steps; a retried entry finds the same pin. Rules themselves
(create, version, status, audit trail) are services/journeys/rules.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.conditions import evaluate
from contracts.rules import RuleDefinition
from db.models import JourneyEntry, Rule, RuleVersion
from services.journeys.rules import version_of


@dataclass(frozen=True)
class Entry:
    rule_id: str
    version: int
    definition: dict[str, Any]
    # Recorded by this call, not found from an earlier attempt: a journey start to count.
    fresh: bool = False
    test: bool = False
    holdout: bool = False


def held_out(rule_id: str, customer_id: str, percent: int) -> bool:
    """Whether the customer is in the rule's holdout group: a stable hash of rule and
    customer (salted apart from the A/B split's bucket), so re-entry gives the same answer
    and the group is the same share of customers for every version."""
    digest = hashlib.sha256(f"holdout:{rule_id}:{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100 < percent


async def enter(
    session: AsyncSession,
    *,
    trigger: str,
    customer_id: str,
    workflow_id: str,
    cart_id: str | None,
    context: dict[str, Any],
    now: datetime,
    only_rule: str | None = None,
    test: bool = False,
) -> Entry | None:
    """The active rule this journey enters, by priority, whose conditions and re-entry
    policy admit the customer; recorded once per journey (a retry finds the same)."""
    existing = await session.scalar(
        select(JourneyEntry).where(JourneyEntry.workflow_id == workflow_id).limit(1)
    )
    if existing is not None:
        return await _recorded(session, existing)
    query = (
        select(Rule, RuleVersion)
        .join(RuleVersion, (RuleVersion.rule_id == Rule.id) & (RuleVersion.version == Rule.version))
        .where(Rule.trigger_event == trigger)
        .order_by(Rule.priority, Rule.created_at, Rule.id)
    )
    if only_rule is not None:
        query = query.where(Rule.id == only_rule)  # a test run: any status but archived
    else:
        query = query.where(Rule.status == "active")
    for rule, version in (await session.execute(query)).all():
        if rule.status == "archived":
            continue
        definition = RuleDefinition.model_validate(version.definition)
        if not evaluate(definition.conditions, context):
            continue
        if not test and not await _reentry_allows(session, rule.id, customer_id, definition, now):
            continue
        return await _record(
            session, version, customer_id, workflow_id, now, test=test, cart_id=cart_id
        )
    return None


async def _reentry_allows(
    session: AsyncSession, rule_id: str, customer_id: str, definition: RuleDefinition, now: datetime
) -> bool:
    policy = definition.reentry
    if policy.policy == "every_time":
        return True
    since = datetime.min.replace(tzinfo=UTC)
    if policy.policy == "once_per":
        assert policy.period is not None
        since = now - policy.period
    previous = await session.scalar(
        select(func.count())
        .select_from(JourneyEntry)
        .where(
            JourneyEntry.rule_id == rule_id,
            JourneyEntry.customer_id == customer_id,
            JourneyEntry.test.is_(False),
            JourneyEntry.entered_at > since,
        )
    )
    return not previous


async def record_exit(
    session: AsyncSession, workflow_id: str, rule_id: str, reason: str, now: datetime
) -> JourneyEntry | None:
    """The journey's exit, recorded once; returns the entry when this call recorded it."""
    entry = await session.scalar(
        select(JourneyEntry)
        .where(JourneyEntry.workflow_id == workflow_id, JourneyEntry.rule_id == rule_id)
        .with_for_update()
    )
    if entry is not None and entry.exited_at is None:
        entry.exited_at, entry.exit_reason = now, reason
        return entry
    return None


async def entries_of(session: AsyncSession, customer_id: str) -> list[JourneyEntry]:
    """Every journey entry recorded for the customer, in no particular order."""
    rows = await session.scalars(
        select(JourneyEntry).where(JourneyEntry.customer_id == customer_id)
    )
    return list(rows)


async def abandon_after(session: AsyncSession, only_rule: str | None = None) -> timedelta | None:
    """The shortest ``trigger.after`` among active cart.abandoned rules (or the rule under
    test): how long a cart must be idle before any journey could start."""
    query = (
        select(RuleVersion.definition)
        .join(Rule, (RuleVersion.rule_id == Rule.id) & (RuleVersion.version == Rule.version))
        .where(Rule.trigger_event == "cart.abandoned")
    )
    query = query.where(Rule.id == only_rule) if only_rule else query.where(Rule.status == "active")
    afters = [
        RuleDefinition.model_validate(definition).trigger.idle_after
        for definition in await session.scalars(query)
    ]
    return min(afters) if afters else None


@dataclass(frozen=True)
class Refusal:
    reason: str


async def enter_rule(
    session: AsyncSession,
    *,
    rule_id: str,
    customer_id: str,
    workflow_id: str,
    run_id: str,
    context: dict[str, Any],
    triggered_at: datetime,
    now: datetime,
    test: bool = False,
) -> Entry | Refusal:
    """A lifecycle journey entering its own rule: admitted when the rule is active, its
    conditions hold, its re-entry policy allows and the customer has not already done
    what the journey would end on. Recorded once per run (a retry finds the same)."""
    existing = await session.scalar(
        select(JourneyEntry).where(
            JourneyEntry.rule_id == rule_id,
            JourneyEntry.workflow_id == workflow_id,
            JourneyEntry.run_id == run_id,
        )
    )
    if existing is not None:
        return await _recorded(session, existing)
    rule = await session.get(Rule, rule_id)
    admitted = ("draft", "active", "paused") if test else ("active",)
    if rule is None or rule.status not in admitted:
        return Refusal("rule_not_active")
    version = await version_of(session, rule.id, rule.version)
    definition = RuleDefinition.model_validate(version.definition)
    if not evaluate(definition.conditions, context):
        return Refusal("conditions")
    if not test and not await _reentry_allows(session, rule.id, customer_id, definition, now):
        return Refusal("reentry")
    if "order.placed" in definition.exit.events and ordered_since(context, triggered_at):
        return Refusal("ordered")
    return await _record(session, version, customer_id, workflow_id, now, test=test, run_id=run_id)


def ordered_since(context: dict[str, Any], since: datetime) -> bool:
    """Whether the customer in ``context`` placed an order after ``since``."""
    last = (context.get("customer") or {}).get("last_order_at")
    return bool(last) and datetime.fromisoformat(str(last)) > since


async def _recorded(session: AsyncSession, entry: JourneyEntry) -> Entry:
    """The entry a retry finds: the one recorded the first time."""
    version = await version_of(session, entry.rule_id, entry.rule_version)
    return Entry(entry.rule_id, entry.rule_version, version.definition, holdout=entry.holdout)


async def _record(
    session: AsyncSession,
    version: RuleVersion,
    customer_id: str,
    workflow_id: str,
    now: datetime,
    *,
    test: bool,
    cart_id: str | None = None,
    run_id: str | None = None,
) -> Entry:
    """Record that the journey entered this rule version (flushed, committed with the
    caller's transaction); a test run is never held out."""
    percent = RuleDefinition.model_validate(version.definition).holdout_percent
    holdout = not test and held_out(version.rule_id, customer_id, percent)
    session.add(
        JourneyEntry(
            rule_id=version.rule_id,
            rule_version=version.version,
            customer_id=customer_id,
            workflow_id=workflow_id,
            cart_id=cart_id,
            run_id=run_id,
            test=test,
            holdout=holdout,
            entered_at=now,
        )
    )
    await session.flush()
    return Entry(
        version.rule_id, version.version, version.definition, fresh=True, test=test, holdout=holdout
    )
