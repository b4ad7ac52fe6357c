"""A/B splits in a journey: the variant a customer takes at a split step, from a hash
bucket that is the same on every replay and every worker, or as recorded for the journey
(``assign_variant``: a promoted winner, or the bucket's variant kept from before).

Not a workflow itself: ``JourneyRunner`` takes a variant here at each split step.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.experiments import (
        ASSIGN_VARIANT,
        RECORD_SPLIT_PATCH,
        AssignVariantInput,
        AssignVariantResult,
    )
    from contracts.journeys import JourneyState
    from contracts.retry_policies import ACTIVITY_RETRY
    from contracts.rules import Op


def split_bucket(rule_id: str, customer_id: str) -> int:
    """0-99, the same for a customer and rule on every replay and every worker."""
    digest = hashlib.sha256(f"{rule_id}:{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


def choose_variant(variants: list[tuple[int, int, str]], bucket: int) -> tuple[int, str]:
    floor = 0
    for weight, start, name in variants:
        floor += weight
        if bucket < floor:
            return start, name
    weight, start, name = variants[-1]
    return start, name


async def take_variant(
    state: JourneyState,
    op: Op,
    *,
    customer_id: str,
    workflow_id: str,
    test: bool,
) -> int:
    """Take a variant: the one recorded for this journey (its hash bucket's, or a
    promoted winner's); where to continue is returned."""
    rule = state.rule
    bucket = split_bucket(rule.rule_id, customer_id)
    start, name = choose_variant(op.variants, bucket)
    if workflow.patched(RECORD_SPLIT_PATCH):
        assigned = await workflow.execute_activity(
            ASSIGN_VARIANT,
            AssignVariantInput(
                rule_id=rule.rule_id,
                rule_version=rule.version,
                path=op.path,
                customer_id=customer_id,
                workflow_id=workflow_id,
                run_id=state.instance,
                variants=[(n, weight) for weight, _, n in op.variants],
                bucket=bucket,
                test=test,
            ),
            summary=f"Assign customer {customer_id} a variant of split {op.path}",
            result_type=AssignVariantResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )
        starts = {n: at for _, at, n in op.variants}
        if assigned.variant in starts:
            start, name = starts[assigned.variant], assigned.variant
    state.variant = name
    return start
