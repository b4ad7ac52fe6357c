"""Activities of A/B tests: recording a journey's variant, judging the experiments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.clock import server_now
from contracts.experiments import (
    ASSIGN_VARIANT,
    EVALUATE_EXPERIMENTS,
    AssignVariantInput,
    AssignVariantResult,
    EvaluateExperimentsResult,
)
from services.journeys import experiments


class ExperimentActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @activity.defn(name=ASSIGN_VARIANT)
    async def assign_variant(self, input: AssignVariantInput) -> AssignVariantResult:
        async with self._sessionmaker() as session, session.begin():
            assignment = await experiments.assign(session, input)
        return AssignVariantResult(
            variant=assignment.variant,
            reason="winner" if assignment.reason == "winner" else "bucket",
        )

    @activity.defn(name=EVALUATE_EXPERIMENTS)
    async def evaluate_experiments(self) -> EvaluateExperimentsResult:
        async with self._sessionmaker() as session, session.begin():
            sweep = await experiments.evaluate_experiments(session, server_now())
        return EvaluateExperimentsResult(
            evaluated=sweep.evaluated,
            decided=[f"{e.rule_id}/v{e.rule_version}/{e.path}" for e in sweep.decided],
        )

    def all(self) -> list[Callable[..., Any]]:
        return [self.assign_variant, self.evaluate_experiments]
