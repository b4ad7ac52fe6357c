"""Activities of lifecycle journeys: entering the journey's own rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.clock import server_now
from contracts.journeys import PinnedRule
from contracts.lifecycle import ENTER_LIFECYCLE, EnterLifecycleInput, EnterLifecycleResult
from services.customers import profiles
from services.journeys import admission
from services.platform import metrics


class LifecycleActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @activity.defn(name=ENTER_LIFECYCLE)
    async def enter_lifecycle(self, input: EnterLifecycleInput) -> EnterLifecycleResult:
        async with self._sessionmaker() as session, session.begin():
            customer = await profiles.customer_context(session, input.customer_id)
            entry = await admission.enter_rule(
                session,
                rule_id=input.rule_id,
                customer_id=input.customer_id,
                workflow_id=input.workflow_id,
                run_id=input.run_id,
                context={
                    **input.context,
                    "event": {"type": input.trigger, "data": input.context},
                    "customer": customer,
                },
                triggered_at=input.triggered_at,
                now=server_now(),
                test=input.test,
            )
        if isinstance(entry, admission.Refusal):
            return EnterLifecycleResult(refused=entry.reason)
        if entry.fresh and not entry.test:
            metrics.JOURNEY_STARTS.labels(entry.rule_id).inc()
        return EnterLifecycleResult(
            rule=PinnedRule(
                rule_id=entry.rule_id,
                version=entry.version,
                definition=entry.definition,
                holdout=entry.holdout,
            )
        )

    def all(self) -> list[Callable[..., Any]]:
        return [self.enter_lifecycle]
