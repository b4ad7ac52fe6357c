"""A/B tests on a rule's split steps: which variant a journey takes (recorded once), how
each variant converts, and when one has won.

A variant's journeys are its recorded assignments; its conversions are the orders
attributed to its messages (last touch, services/journeys/attribution.py), so a rule with several
splits that reuse variant names shares those conversions between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from statistics import NormalDist
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.experiments import AssignVariantInput
from contracts.rules import ExperimentSettings, RuleDefinition, compile_steps
from db.models import (
    Attribution,
    Experiment,
    JourneyEntry,
    Message,
    Rule,
    RuleVersion,
    SplitAssignment,
)


@dataclass(frozen=True)
class Assignment:
    variant: str
    reason: str


def bucket_variant(variants: Sequence[tuple[str, int]], bucket: int) -> str:
    """The variant whose share of the 0-99 buckets holds ``bucket`` (as the workflow's
    ``choose_variant`` does, so journeys from before recording agree)."""
    floor = 0
    for name, weight in variants:
        floor += weight
        if bucket < floor:
            return name
    return variants[-1][0]


async def assign(session: AsyncSession, request: AssignVariantInput) -> Assignment:
    """The variant this journey takes at this split (see ``assign_all``)."""
    [assignment] = await assign_all(session, [request])
    return assignment


async def assign_all(
    session: AsyncSession, requests: Sequence[AssignVariantInput]
) -> list[Assignment]:
    """The variant each journey takes at its split: a promoted winner's, else its hash
    bucket's. Recorded once, so a retry gets the first answer even if a winner was
    promoted in between; test runs are not recorded (they are not part of the test)."""
    winners: dict[tuple[str, int, str], str | None] = {}
    chosen: list[Assignment] = []
    for r in requests:
        key = (r.rule_id, r.rule_version, r.path)
        if key not in winners:
            experiment = await session.get(Experiment, key)
            promoted = experiment is not None and experiment.promoted
            winners[key] = experiment.winner if experiment is not None and promoted else None
        winner = winners[key]
        if winner is not None and winner in (name for name, _ in r.variants):
            chosen.append(Assignment(winner, "winner"))
        else:
            chosen.append(Assignment(bucket_variant(r.variants, r.bucket), "bucket"))
    recorded = [(r, c) for r, c in zip(requests, chosen, strict=True) if not r.test]
    if not recorded:
        return chosen
    await session.execute(
        insert(SplitAssignment).on_conflict_do_nothing(),
        [
            {
                "workflow_id": r.workflow_id,
                "run_id": r.run_id,
                "path": r.path,
                "rule_id": r.rule_id,
                "rule_version": r.rule_version,
                "customer_id": r.customer_id,
                "variant": c.variant,
                "reason": c.reason,
            }
            for r, c in recorded
        ],
    )
    keys = {(r.workflow_id, r.run_id, r.path) for r, _ in recorded}
    # By columns, not row tuples: PostgreSQL then finds them through the primary key.
    where = _among(keys)
    rows = await session.execute(
        select(
            SplitAssignment.workflow_id,
            SplitAssignment.run_id,
            SplitAssignment.path,
            SplitAssignment.variant,
            SplitAssignment.reason,
        ).where(*where)
    )
    found = {(w, run, p): Assignment(v, reason) for w, run, p, v, reason in rows.all()}
    # A journey's first split names its variant in journey_entries (for analytics).
    await session.execute(
        update(JourneyEntry)
        .where(
            *where,
            JourneyEntry.rule_id == SplitAssignment.rule_id,
            JourneyEntry.workflow_id == SplitAssignment.workflow_id,
            (JourneyEntry.run_id == SplitAssignment.run_id) | JourneyEntry.run_id.is_(None),
            JourneyEntry.variant.is_(None),
        )
        .values(variant=SplitAssignment.variant)
        .execution_options(synchronize_session=False)
    )
    return [
        c if r.test else found[(r.workflow_id, r.run_id, r.path)]
        for r, c in zip(requests, chosen, strict=True)
    ]


def _among(keys: set[tuple[str, str, str]]) -> list[Any]:
    workflow_ids, run_ids, paths = (sorted({key[i] for key in keys}) for i in range(3))
    return [
        SplitAssignment.workflow_id.in_(workflow_ids),
        SplitAssignment.run_id.in_(run_ids),
        SplitAssignment.path.in_(paths),
    ]


# --- results and verdicts -------------------------------------------------------------


@dataclass
class VariantResult:
    name: str
    journeys: int = 0
    conversions: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)
    # Two-sided p-value of the best variant against this one (None for the best itself).
    p_value: float | None = None

    @property
    def rate(self) -> float:
        return self.conversions / self.journeys if self.journeys else 0.0


@dataclass
class Verdict:
    variants: list[VariantResult]
    best: str | None
    winner: str | None
    # Whether every variant has reached the minimum sample.
    sampled: bool


def p_value(conversions_a: int, journeys_a: int, conversions_b: int, journeys_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    if not journeys_a or not journeys_b:
        return 1.0
    pooled = (conversions_a + conversions_b) / (journeys_a + journeys_b)
    error = math.sqrt(pooled * (1 - pooled) * (1 / journeys_a + 1 / journeys_b))
    if error == 0:
        return 1.0
    z = (conversions_a / journeys_a - conversions_b / journeys_b) / error
    return 2 * (1 - NormalDist().cdf(abs(z)))


def judge(variants: list[VariantResult], settings: ExperimentSettings) -> Verdict:
    """A winner only when every variant has ``min_sample`` journeys and the best converts
    better than each other one at ``confidence``: one look per hour at a growing sample
    would otherwise declare winners on noise far more often than 1 - confidence."""
    if not variants:
        return Verdict(variants, None, None, False)
    best = max(variants, key=lambda v: v.rate)
    for other in variants:
        other.p_value = (
            None
            if other is best
            else p_value(best.conversions, best.journeys, other.conversions, other.journeys)
        )
    sampled = all(v.journeys >= settings.min_sample for v in variants)
    alpha = 1 - settings.confidence
    beats_all = all(
        v.p_value is not None and v.p_value < alpha and best.rate > v.rate
        for v in variants
        if v is not best
    )
    return Verdict(variants, best.name, best.name if sampled and beats_all else None, sampled)


def not_a_test(rule_id: str, workflow_id: Any) -> Any:
    """Not from a test run of the rule: a marketer's rehearsal is no customer's journey."""
    return ~exists().where(
        JourneyEntry.rule_id == rule_id,
        JourneyEntry.workflow_id == workflow_id,
        JourneyEntry.test.is_(True),
    )


def not_held_out(rule_id: str) -> Any:
    """Not a journey of the rule's holdout group: it takes a variant but is sent nothing,
    so it would only dilute every variant's rate alike."""
    return ~exists().where(
        JourneyEntry.rule_id == rule_id,
        JourneyEntry.workflow_id == SplitAssignment.workflow_id,
        or_(JourneyEntry.run_id.is_(None), JourneyEntry.run_id == SplitAssignment.run_id),
        JourneyEntry.holdout.is_(True),
    )


def split_variants(definition: RuleDefinition) -> dict[str, list[tuple[str, int]]]:
    """Every split step of a rule version: its path and its (name, weight) variants."""
    return {
        op.path: [(name, weight) for weight, _, name in op.variants]
        for op in compile_steps(definition.steps)
        if op.kind == "split"
    }


async def results(
    session: AsyncSession, rule_id: str, version: int, path: str, names: Sequence[str]
) -> list[VariantResult]:
    found = {name: VariantResult(name) for name in names}
    journeys = await session.execute(
        select(SplitAssignment.variant, func.count())
        .where(
            SplitAssignment.rule_id == rule_id,
            SplitAssignment.rule_version == version,
            SplitAssignment.path == path,
            not_held_out(rule_id),
        )
        .group_by(SplitAssignment.variant)
    )
    for name, count in journeys.all():
        found.setdefault(name, VariantResult(name)).journeys = count
    orders = await session.execute(
        select(
            Attribution.variant,
            Attribution.currency,
            func.count(),
            func.coalesce(func.sum(Attribution.revenue), 0),
        )
        .outerjoin(Message, Message.id == Attribution.message_id)
        .where(
            Attribution.rule_id == rule_id,
            Attribution.rule_version == version,
            Attribution.variant.in_(list(found)),
            not_a_test(rule_id, Message.workflow_id),
        )
        .group_by(Attribution.variant, Attribution.currency)
    )
    for variant, currency, count, revenue in orders.all():
        result = found[str(variant)]
        result.conversions += count
        result.revenue[currency] = Decimal(revenue)
    return list(found.values())


def figures(verdict: Verdict, settings: ExperimentSettings) -> dict[str, Any]:
    """The verdict as JSON: stored with a decision and shown by analytics."""
    return {
        "confidence": settings.confidence,
        "min_sample": settings.min_sample,
        "best": verdict.best,
        "winner": verdict.winner,
        "sampled": verdict.sampled,
        "variants": [
            {
                "name": v.name,
                "journeys": v.journeys,
                "conversions": v.conversions,
                "conversion_rate": v.rate,
                "revenue": {currency: str(amount) for currency, amount in v.revenue.items()},
                "p_value": v.p_value,
            }
            for v in verdict.variants
        ],
    }


async def evaluate(
    session: AsyncSession,
    rule_id: str,
    version: int,
    definition: RuleDefinition,
    path: str,
    now: datetime,
) -> Experiment:
    """Judge one split now and store the figures; a decided experiment stays decided."""
    experiment = await session.get(Experiment, (rule_id, version, path))
    if experiment is not None and experiment.status == "decided":
        return experiment
    settings = definition.experiment
    names = [name for name, _ in split_variants(definition).get(path, [])]
    verdict = judge(await results(session, rule_id, version, path, names), settings)
    result = {**figures(verdict, settings), "evaluated_at": now.isoformat()}
    values: dict[str, Any] = {"status": "running", "result": result}
    if verdict.winner is not None:
        values.update(
            status="decided",
            winner=verdict.winner,
            promoted=settings.send_all_to_winner,
            decided_at=now,
        )
    statement = insert(Experiment).values(
        rule_id=rule_id, rule_version=version, path=path, **values
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Experiment.rule_id, Experiment.rule_version, Experiment.path],
            set_=values,
            where=Experiment.status != "decided",
        )
    )
    await session.flush()
    experiment = await session.get(Experiment, (rule_id, version, path), populate_existing=True)
    assert experiment is not None
    return experiment


@dataclass
class Sweep:
    evaluated: int = 0
    decided: list[Experiment] = field(default_factory=list)  # by this sweep


async def evaluate_experiments(session: AsyncSession, now: datetime) -> Sweep:
    """Judge every split that journeys have reached, in every version of every active rule
    (journeys on an older version still convert, and are still judged)."""
    reached = await session.execute(
        select(SplitAssignment.rule_id, SplitAssignment.rule_version, SplitAssignment.path)
        .join(Rule, Rule.id == SplitAssignment.rule_id)
        .where(Rule.status == "active")
        .distinct()
        .order_by(SplitAssignment.rule_id, SplitAssignment.rule_version, SplitAssignment.path)
    )
    sweep = Sweep()
    definitions: dict[tuple[str, int], RuleDefinition] = {}
    for rule_id, version, path in reached.all():
        if (rule_id, version) not in definitions:
            row = await session.get(RuleVersion, (rule_id, version))
            if row is None:
                continue
            definitions[rule_id, version] = RuleDefinition.model_validate(row.definition)
        before = await session.get(Experiment, (rule_id, version, path))
        if before is not None and before.status == "decided":
            continue
        definition = definitions[rule_id, version]
        experiment = await evaluate(session, rule_id, version, definition, path, now)
        sweep.evaluated += 1
        if experiment.status == "decided":
            sweep.decided.append(experiment)
    return sweep
