"""Product fan-out (``fanout/{event_id}``): tells everyone interested in a product that it
is back in stock or cheaper, by starting one lifecycle journey per customer.

The audience can be thousands of customers, so it is walked in pages (one activity each,
``SUTRA_FANOUT_BATCH_SIZE`` customers) with a pause after each page that keeps to
``SUTRA_FANOUT_RATE_PER_SECOND`` journeys a second. The journeys are separate workflows,
not children: this history holds only the pages, and it continues as new every
``PAGES_PER_RUN`` pages carrying the cursor, so no run's history grows large however big
the audience is.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.fanout import FANOUT_BATCH, FanoutBatch, FanoutInput
    from contracts.names import FANOUT_WORKFLOW
    from contracts.retry_policies import ACTIVITY_RETRY

# About a dozen history events per page: some 600 per run.
PAGES_PER_RUN = 50
# A page starts a few hundred workflows at most; a minute is plenty, and a stuck attempt is
# retried rather than waited for.
_PAGE_TIMEOUT = timedelta(minutes=2)
# A page's worker that dies is noticed within this (the page heartbeats), not after the
# page timeout: the fan-out goes on on another worker within seconds of a crash.
HEARTBEAT_PATCH = "fanout-page-heartbeat"
_PAGE_HEARTBEAT = timedelta(seconds=10)


@workflow.defn(name=FANOUT_WORKFLOW)
class ProductFanout:
    @workflow.run
    async def run(self, input: FanoutInput) -> int:
        """How many customers were reached, over the whole continue-as-new chain."""
        progress = input
        for _ in range(PAGES_PER_RUN):
            workflow.set_current_details(describe(progress, done=False))
            page = await workflow.execute_activity(
                FANOUT_BATCH,
                progress,
                summary=f"Start the next page of {progress.trigger} journeys for {progress.sku}",
                result_type=FanoutBatch,
                start_to_close_timeout=_PAGE_TIMEOUT,
                heartbeat_timeout=_PAGE_HEARTBEAT if workflow.patched(HEARTBEAT_PATCH) else None,
                retry_policy=ACTIVITY_RETRY,
            )
            progress = progress.model_copy(
                update={"cursor": page.cursor, "notified": progress.notified + page.customers}
            )
            if page.cursor is None:
                workflow.set_current_details(describe(progress, done=True))
                return progress.notified
            if page.pause > timedelta(0):
                await workflow.sleep(page.pause)
        workflow.continue_as_new(progress)


def describe(progress: FanoutInput, *, done: bool) -> str:
    """The line ops read in the Temporal UI."""
    what = "back in stock" if progress.trigger == "product.back_in_stock" else "price dropped"
    head = f"{progress.sku} {what} (event {progress.event_id}): "
    if done:
        return head + f"done, {progress.notified} customers notified"
    where = f", next after customer {progress.cursor}" if progress.cursor else ""
    return head + f"{progress.notified} customers notified so far{where}"
