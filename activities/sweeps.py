"""Activities of the time-trigger sweep: which rules to sweep, and one batch of one rule:
find the next page of due customers and claim and start their journeys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from activities.heartbeats import heartbeating
from contracts.sweeps import (
    SWEEP_BATCH,
    SWEEP_TARGETS,
    SweepBatchInput,
    SweepBatchResult,
    TargetsInput,
    TargetsResult,
)
from services.journeys import time_triggers
from services.journeys.starts import claim_and_start


class SweepActivities:
    def __init__(
        self, client: Client, sessionmaker: async_sessionmaker[AsyncSession], task_queue: str
    ) -> None:
        self._client = client
        self._sessionmaker = sessionmaker
        # The queue the journeys are started on: the worker's own, in production.
        self._task_queue = task_queue

    @activity.defn(name=SWEEP_TARGETS)
    async def time_trigger_targets(self, input: TargetsInput) -> TargetsResult:
        async with self._sessionmaker() as session:
            return TargetsResult(targets=await time_triggers.targets(session, input.only_rules))

    @activity.defn(name=SWEEP_BATCH)
    async def sweep_batch(self, input: SweepBatchInput) -> SweepBatchResult:
        async with heartbeating():
            return await self._sweep_batch(input)

    async def _sweep_batch(self, input: SweepBatchInput) -> SweepBatchResult:
        async with self._sessionmaker() as session:
            trigger = await time_triggers.active_trigger(session, input.rule_id)
            if trigger is None:
                return SweepBatchResult()  # paused or archived since the sweep began
            page = await time_triggers.due_page(
                session, input.rule_id, trigger, input.now, input.after_key, input.limit
            )
        report = await claim_and_start(
            self._client, self._sessionmaker, self._task_queue, page.starts
        )
        return SweepBatchResult(
            next_key=page.next_key,
            found=len(page.starts),
            claimed=report.claimed,
            started=report.started,
            already=report.already,
        )

    def all(self) -> list[Callable[..., Any]]:
        return [self.time_trigger_targets, self.sweep_batch]
