"""Contracts of A/B tests: the recorded variant a journey takes at a split step."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ASSIGN_VARIANT = "assign_variant"
EVALUATE_EXPERIMENTS = "evaluate_experiments"
# Journeys that reached a split before assignments were recorded chose locally, with no
# activity; their histories must replay that way.
RECORD_SPLIT_PATCH = "record-split-assignment"


class AssignVariantInput(BaseModel):
    rule_id: str
    rule_version: int
    path: str
    customer_id: str
    workflow_id: str
    # The run that entered the journey: with ``path`` it identifies one assignment.
    run_id: str
    variants: list[tuple[str, int]] = Field(description="(name, weight) in rule order")
    bucket: int = Field(ge=0, le=99, description="The customer's hash bucket for the rule")
    # Test runs of a rule take a variant but are not part of its experiment.
    test: bool = False


class AssignVariantResult(BaseModel):
    variant: str
    reason: Literal["bucket", "winner"] = "bucket"


class EvaluateExperimentsResult(BaseModel):
    evaluated: int = 0
    decided: list[str] = Field(default_factory=list, description="rule/vN/path newly decided")
