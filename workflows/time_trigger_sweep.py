"""Time-trigger sweep (``TimeTriggerSweep``, started hourly by the ``sutra-time-triggers``
Schedule): starts the birthday, anniversary, win-back and replenishment journeys that are
due, with no workflow waiting per customer in between.

It walks the active time rules one after another, each in keyset pages of due customers
(one ``sweep_batch`` activity per page: query, claim, start). The position — rule and last
key — lives in this workflow's state and crosses continue-as-new every
``batches_per_run`` pages, so the history stays bounded for a million customers. A sweep
cut off anywhere (terminated, worker killed) and run again finds the started occurrences
already claimed: the rerun starts only the rest, and nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts.experiments import EVALUATE_EXPERIMENTS, EvaluateExperimentsResult
    from contracts.names import STATE_QUERY, SWEEP_WORKFLOW
    from contracts.retry_policies import ACTIVITY_RETRY, FEW_ATTEMPTS
    from contracts.sweeps import (
        SWEEP_BATCH,
        SWEEP_TARGETS,
        SweepBatchInput,
        SweepBatchResult,
        SweepInput,
        SweepTotals,
        TargetsInput,
        TargetsResult,
    )

# A batch starts up to a few hundred workflows; a stuck attempt is retried, not waited for.
_BATCH_TIMEOUT = timedelta(minutes=5)
# A batch's worker that dies is noticed within this (the batch heartbeats), not after the
# batch timeout: the sweep goes on on another worker within seconds of a crash.
HEARTBEAT_PATCH = "sweep-batch-heartbeat"
_BATCH_HEARTBEAT = timedelta(seconds=10)


@workflow.defn(name=SWEEP_WORKFLOW)
class TimeTriggerSweep:
    def __init__(self) -> None:
        self.progress = SweepInput()

    @workflow.run
    async def run(self, input: SweepInput) -> SweepTotals:
        """What the whole sweep did, over its continue-as-new chain."""
        # One clock for the whole sweep: every page of every run asks "due as of now".
        progress = input.model_copy(update={"now": input.now or workflow.now()})
        if progress.targets is None:
            found = await workflow.execute_activity(
                SWEEP_TARGETS,
                TargetsInput(only_rules=progress.only_rules),
                summary="List the active time-triggered rules to sweep",
                result_type=TargetsResult,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=ACTIVITY_RETRY,
            )
            progress.targets = found.targets
        self.progress = progress
        targets = progress.targets
        for _ in range(progress.batches_per_run):
            if progress.position >= len(targets):
                break
            workflow.set_current_details(describe(progress))
            target = targets[progress.position]
            assert progress.now is not None
            batch = await workflow.execute_activity(
                SWEEP_BATCH,
                SweepBatchInput(
                    rule_id=target.rule_id,
                    now=progress.now,
                    after_key=progress.after_key,
                    limit=progress.limit,
                ),
                summary=f"Start due journeys of rule {target.rule_id}",
                result_type=SweepBatchResult,
                start_to_close_timeout=_BATCH_TIMEOUT,
                heartbeat_timeout=_BATCH_HEARTBEAT if workflow.patched(HEARTBEAT_PATCH) else None,
                retry_policy=ACTIVITY_RETRY,
            )
            _add(progress.totals, batch)
            if batch.next_key is None:
                progress.position, progress.after_key = progress.position + 1, None
            else:
                progress.after_key = batch.next_key
        else:
            if progress.position < len(targets):
                workflow.continue_as_new(progress)
        await self._judge_experiments()
        workflow.set_current_details(describe(progress))
        return progress.totals

    async def _judge_experiments(self) -> None:
        # Hourly is often enough to declare A/B winners, and the sweep is the hourly job.
        # A failed judgement waits for the next hour; it must not fail the sweep.
        try:
            await workflow.execute_activity(
                EVALUATE_EXPERIMENTS,
                summary="Judge running A/B tests that reached their sample",
                result_type=EvaluateExperimentsResult,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=FEW_ATTEMPTS,
            )
        except ActivityError as error:
            workflow.logger.warning("experiments not judged this sweep: %s", error.cause)

    @workflow.query(name=STATE_QUERY)
    def state(self) -> SweepInput:
        return self.progress


def _add(totals: SweepTotals, batch: SweepBatchResult) -> None:
    totals.batches += 1
    totals.found += batch.found
    totals.claimed += batch.claimed
    totals.started += batch.started
    totals.already += batch.already


def describe(progress: SweepInput) -> str:
    """The line ops read in the Temporal UI."""
    targets = progress.targets or []
    t = progress.totals
    head = f"Time-trigger sweep as of {progress.now:%Y-%m-%d %H:%M} UTC: "
    counts = f"{t.started} journeys started ({t.found} due, {t.batches} batches)"
    if progress.position >= len(targets):
        return head + f"done, {counts}"
    target = targets[progress.position]
    return (
        head
        + f"rule {target.rule_id} ({target.trigger}), {progress.position + 1} of "
        + (f"{len(targets)}; {counts}")
    )
