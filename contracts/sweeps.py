"""Contracts of the time-trigger sweep (workflows/time_trigger_sweep.py) and its two
activities: which rules to sweep, and one batch (a keyset page) of one rule."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

SWEEP_TARGETS = "time_trigger_targets"
SWEEP_BATCH = "sweep_batch"

DEFAULT_BATCH = 500


class SweepTarget(BaseModel):
    trigger: str
    rule_id: str


class SweepTotals(BaseModel):
    batches: int = 0
    found: int = 0  # due items the queries returned
    claimed: int = 0  # new claims
    started: int = 0  # journeys started
    already: int = 0  # claims an earlier, cut-off sweep had already started


class SweepInput(BaseModel):
    # The sweep's clock; None: the time the run starts (the schedule's tick).
    now: datetime | None = None
    # Only these rules (ops sweeping one rule, tests); None: every active time rule.
    only_rules: list[str] | None = None
    limit: int = Field(default=DEFAULT_BATCH, ge=1, le=5000)
    # Batches per run before continue-as-new keeps the history bounded.
    batches_per_run: int = Field(default=100, ge=1)
    # Carried across continue-as-new: the rules fixed at the sweep's start and where it is.
    targets: list[SweepTarget] | None = None
    position: int = 0
    after_key: str | None = None
    totals: SweepTotals = Field(default_factory=SweepTotals)


class TargetsInput(BaseModel):
    only_rules: list[str] | None = None


class TargetsResult(BaseModel):
    targets: list[SweepTarget]


class SweepBatchInput(BaseModel):
    rule_id: str
    now: datetime
    after_key: str | None = None
    limit: int = DEFAULT_BATCH


class SweepBatchResult(BaseModel):
    next_key: str | None = None
    found: int = 0
    claimed: int = 0
    started: int = 0
    already: int = 0
