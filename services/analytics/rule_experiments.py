"""The A/B tests on a rule version's splits, as rule analytics show them: live figures from
``services/journeys/experiments.py`` and the stored verdict (a decided experiment also keeps
the figures it was decided on). All time, not a period: a verdict is over every journey of
the test."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.rules import ExperimentSettings, RuleDefinition
from db.models import Experiment, RuleVersion
from services.journeys import experiments


async def blocks(session: AsyncSession, rule_id: str, version: RuleVersion) -> list[dict[str, Any]]:
    definition = RuleDefinition.model_validate(version.definition)
    found_blocks = []
    for path, variants in experiments.split_variants(definition).items():
        names = [name for name, _ in variants]
        found = await experiments.results(session, rule_id, version.version, path, names)
        verdict = experiments.judge(found, definition.experiment)
        stored = await session.get(Experiment, (rule_id, version.version, path))
        decided = stored is not None and stored.status == "decided"
        found_blocks.append(
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
    return found_blocks


def _verdict(verdict: experiments.Verdict, settings: ExperimentSettings) -> str:
    if not verdict.sampled:
        return f"collecting: every variant needs {settings.min_sample} journeys"
    if verdict.winner is None:
        return f"no variant is better at {settings.confidence:.1%} confidence yet"
    return f"{verdict.winner} converts best at {settings.confidence:.1%} confidence"
