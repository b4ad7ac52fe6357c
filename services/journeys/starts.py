"""Starting many lifecycle journeys at once (time-trigger sweeps, product fan-outs) so that
each occurrence gets exactly one journey, however often the batch is retried.

A batch is first *claimed*: one ``journey_claims`` row per (rule, customer, occurrence),
inserted with ``ON CONFLICT DO NOTHING`` and committed before any workflow starts. Then
every claim of the batch that is not yet marked started gets its workflow, under an id
built from the claim and a reuse policy that refuses a second run of that id: a batch cut
off between the start and the mark starts nothing twice when it runs again.

Owns its transactions: the claims are committed before any workflow starts (a start cannot
be rolled back, so the claim that stands for it must already be durable), and the marks
after the starts. It takes the sessionmaker, not a session; each commit is one named step,
``_claim`` and ``_mark_started``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from contracts import search_attributes as sa
from contracts.lifecycle import JourneyStart
from contracts.names import LIFECYCLE_WORKFLOW
from db.models import JourneyClaim

_CONCURRENT_STARTS = 20


@dataclass
class StartReport:
    claimed: int = 0  # new claims made by this call
    started: int = 0  # workflows this call started
    already: int = 0  # claims another (earlier, cut-off) attempt had already started


async def claim_and_start(
    client: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    task_queue: str,
    starts: Sequence[JourneyStart],
) -> StartReport:
    report = StartReport()
    if not starts:
        return report
    report.claimed = await _claim(sessionmaker, starts)
    todo = await _not_started(sessionmaker, starts)
    gate = asyncio.Semaphore(_CONCURRENT_STARTS)

    async def start(item: JourneyStart) -> bool:
        journey = item.input()
        async with gate:
            try:
                await client.start_workflow(
                    LIFECYCLE_WORKFLOW,
                    journey,
                    id=journey.workflow_id,
                    task_queue=task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(sa.CUSTOMER_ID, item.customer_id),
                            SearchAttributePair(sa.RULE_ID, item.rule_id),
                        ]
                    ),
                    static_summary=(
                        f"{item.trigger} journey of customer {item.customer_id}"
                        f" on rule {item.rule_id}"
                    ),
                )
            except WorkflowAlreadyStartedError:
                return False
        return True

    outcomes = await asyncio.gather(*(start(s) for s in todo))
    report.started = sum(outcomes)
    report.already = len(outcomes) - report.started
    if todo:
        await _mark_started(sessionmaker, todo)
    return report


def _key(start: JourneyStart) -> tuple[str, str, str]:
    return (start.rule_id, start.customer_id, start.occurrence)


_CLAIM_KEY = tuple_(JourneyClaim.rule_id, JourneyClaim.customer_id, JourneyClaim.occurrence)


async def _claim(
    sessionmaker: async_sessionmaker[AsyncSession], starts: Sequence[JourneyStart]
) -> int:
    """The batch's claims, committed; how many are new."""
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            insert(JourneyClaim).on_conflict_do_nothing().returning(JourneyClaim.customer_id),
            [
                {
                    "rule_id": s.rule_id,
                    "customer_id": s.customer_id,
                    "occurrence": s.occurrence,
                    "workflow_id": s.input().workflow_id,
                }
                for s in starts
            ],
        )
        return len(result.all())


async def _not_started(
    sessionmaker: async_sessionmaker[AsyncSession], starts: Sequence[JourneyStart]
) -> list[JourneyStart]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(JourneyClaim.rule_id, JourneyClaim.customer_id, JourneyClaim.occurrence).where(
                _CLAIM_KEY.in_([_key(s) for s in starts]),
                JourneyClaim.started_at.is_(None),
            )
        )
        pending = {(rule_id, customer_id, occurrence) for rule_id, customer_id, occurrence in rows}
    return [s for s in starts if _key(s) in pending]


async def _mark_started(
    sessionmaker: async_sessionmaker[AsyncSession], started: Sequence[JourneyStart]
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(JourneyClaim)
            .where(_CLAIM_KEY.in_([_key(s) for s in started]))
            .values(started_at=datetime.now(UTC))
        )
