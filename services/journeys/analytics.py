"""How a rule performs, per version and variant: what marketers compare before they edit
it, and the A/B tests on its splits.

Test runs of a rule (``POST /v1/rules/{id}/test``) are left out: they are the marketer's
own rehearsals, not customers.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.rules import ExperimentSettings, RuleDefinition
from db.models import Attribution, Experiment, JourneyEntry, Message, RuleVersion
from services.journeys import experiments

STATUSES = ("sent", "delivered", "opened", "clicked", "bounced", "failed")
Key = tuple[int, str | None]  # (version, variant)


def _row() -> dict[str, Any]:
    return {
        "entered": 0,
        "exited": defaultdict(int),
        "messages": defaultdict(lambda: dict.fromkeys(STATUSES, 0)),
        "conversions": 0,
        "revenue": defaultdict(Decimal),
        "discount_cost": defaultdict(Decimal),
    }


async def rule_analytics(session: AsyncSession, rule_id: str) -> dict[str, Any]:
    rows: dict[Key, dict[str, Any]] = defaultdict(_row)
    entries = await session.execute(
        select(
            JourneyEntry.rule_version, JourneyEntry.variant, JourneyEntry.exit_reason, func.count()
        )
        .where(JourneyEntry.rule_id == rule_id, JourneyEntry.test.is_(False))
        .group_by(JourneyEntry.rule_version, JourneyEntry.variant, JourneyEntry.exit_reason)
    )
    for version, variant, reason, count in entries.all():
        row = rows[version, variant]
        row["entered"] += count
        if reason is not None:
            row["exited"][reason] += count
    await _messages(session, rule_id, rows)
    await _conversions(session, rule_id, rows)
    versions = list(
        await session.scalars(
            select(RuleVersion).where(RuleVersion.rule_id == rule_id).order_by(RuleVersion.version)
        )
    )
    return {
        "rule_id": rule_id,
        "versions": [
            {
                "version": v.version,
                "variants": [
                    _out(variant, rows[key])
                    for key in sorted(
                        (k for k in rows if k[0] == v.version), key=lambda k: k[1] or ""
                    )
                    for variant in [key[1]]
                ],
            }
            for v in versions
        ],
        "experiments": [
            block for v in versions for block in await _experiments(session, rule_id, v)
        ],
    }


async def _messages(session: AsyncSession, rule_id: str, rows: dict[Key, dict[str, Any]]) -> None:
    variant = Message.details["variant"].astext
    counted = [
        func.count(Message.sent_at),
        func.count(Message.delivered_at),
        func.count(Message.opened_at),
        func.count(Message.clicked_at),
        func.count().filter(Message.status == "bounced"),
        func.count().filter(Message.status == "failed"),
    ]
    result = await session.execute(
        select(Message.rule_version, variant, Message.channel, *counted)
        .where(
            Message.rule_id == rule_id,
            Message.channel.is_not(None),
            experiments.not_a_test(rule_id, Message.workflow_id),
        )
        .group_by(Message.rule_version, variant, Message.channel)
    )
    for version, name, channel, *counts in result.all():
        rows[version, name]["messages"][channel] = dict(zip(STATUSES, counts, strict=True))


async def _conversions(
    session: AsyncSession, rule_id: str, rows: dict[Key, dict[str, Any]]
) -> None:
    result = await session.execute(
        select(
            Attribution.rule_version,
            Attribution.variant,
            Attribution.currency,
            func.count(),
            func.sum(Attribution.revenue),
            func.sum(Attribution.discount),
        )
        .outerjoin(Message, Message.id == Attribution.message_id)
        .where(Attribution.rule_id == rule_id, experiments.not_a_test(rule_id, Message.workflow_id))
        .group_by(Attribution.rule_version, Attribution.variant, Attribution.currency)
    )
    for version, name, currency, count, revenue, discount in result.all():
        if version is None:
            continue
        row = rows[version, name]
        row["conversions"] += count
        row["revenue"][currency] += revenue
        row["discount_cost"][currency] += discount


def _out(variant: str | None, row: dict[str, Any]) -> dict[str, Any]:
    entered = row["entered"]
    return {
        "variant": variant,
        "entered": entered,
        "exited": dict(row["exited"]),
        "messages": dict(row["messages"]),
        "conversions": row["conversions"],
        "conversion_rate": row["conversions"] / entered if entered else None,
        "revenue": {c: str(a) for c, a in row["revenue"].items()},
        "discount_cost": {c: str(a) for c, a in row["discount_cost"].items()},
    }


async def _experiments(
    session: AsyncSession, rule_id: str, version: RuleVersion
) -> list[dict[str, Any]]:
    """The live figures of each split of the version, and its stored verdict (a decided
    experiment also keeps the figures it was decided on)."""
    definition = RuleDefinition.model_validate(version.definition)
    blocks = []
    for path, variants in experiments.split_variants(definition).items():
        names = [name for name, _ in variants]
        found = await experiments.results(session, rule_id, version.version, path, names)
        verdict = experiments.judge(found, definition.experiment)
        stored = await session.get(Experiment, (rule_id, version.version, path))
        decided = stored is not None and stored.status == "decided"
        blocks.append(
            {
                **experiments.figures(verdict, definition.experiment),
                "version": version.version,
                "path": path,
                "weights": dict(variants),
                "status": "decided" if decided else "running",
                "winner": stored.winner if stored is not None and decided else None,
                "promoted": stored is not None and decided and stored.promoted,
                "decided_at": stored.decided_at if stored is not None and decided else None,
                "decision": stored.result if stored is not None and decided else None,
                "verdict": _verdict(verdict, definition.experiment),
            }
        )
    return blocks


def _verdict(verdict: experiments.Verdict, settings: ExperimentSettings) -> str:
    if not verdict.sampled:
        return f"collecting: every variant needs {settings.min_sample} journeys"
    if verdict.winner is None:
        return f"no variant is better at {settings.confidence:.1%} confidence yet"
    return f"{verdict.winner} converts best at {settings.confidence:.1%} confidence"
