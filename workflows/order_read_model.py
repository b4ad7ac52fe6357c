"""The order's row in the orders read model (``GET /v1/orders``, payments analytics), kept
current by the order itself: after every step that changed what the row shows, a write of
the facts (``contracts/order_facts.py``) as they are then.

Writes go out one at a time in the background, so a slow database never holds up the
order's own deadlines: a change made while one is under way is picked up by the next,
which writes the latest facts (changes in between fold into it). Each write carries the
next ``OrderState.read_model_version``; the row takes only a newer one, so a retried or late
write never takes it back. The workflow waits for the last write before it ends.

Orders that were already past their placement when this shipped (patch
``order-read-model``) write nothing in that run: they have no row until a reopened run.

Not a workflow itself: the order workflow holds a ``ReadModel`` and calls ``changed`` from
its ``publish`` step.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts import order_facts
    from contracts.order_facts import SAVE_ORDER, OrderFacts, SaveOrderInput
    from contracts.orders import OrderState
    from contracts.retry_policies import ACTIVITY_RETRY

READ_MODEL_PATCH = "order-read-model"


class ReadModel:
    def __init__(self, state: OrderState, *, timeout: timedelta) -> None:
        self._state = state
        self._timeout = timeout
        self._saved: OrderFacts | None = None
        self._task: asyncio.Task[None] | None = None
        # When a payment was seen that no history entry shows (kept: the facts must not
        # change from one look to the next).
        self._paid_seen_at: datetime | None = None

    def _facts(self) -> OrderFacts:
        state = self._state
        if (
            self._paid_seen_at is None
            and order_facts.shows_paid_online(state)
            and order_facts.paid_online_at(state) is None
        ):
            self._paid_seen_at = workflow.now()
        return order_facts.of(state, self._paid_seen_at)

    def changed(self) -> None:
        """The order may have changed: write its row unless nothing it shows did (a write
        under way picks the change up when it is done)."""
        if self._state.placed_at is None or not workflow.patched(READ_MODEL_PATCH):
            return
        if self._task is not None and not self._task.done():
            return
        if self._facts() != self._saved:
            self._task = asyncio.create_task(self._write())

    def idle(self) -> bool:
        return self._task is None or self._task.done()

    async def _write(self) -> None:
        while (facts := self._facts()) != self._saved:
            self._state.read_model_version += 1
            try:
                await workflow.execute_activity(
                    SAVE_ORDER,
                    SaveOrderInput(
                        facts=facts,
                        version=self._state.read_model_version,
                        updated_at=workflow.now(),
                    ),
                    start_to_close_timeout=self._timeout,
                    retry_policy=ACTIVITY_RETRY,
                )
            except ActivityError:
                return  # retried until it succeeds; should it give up, the next change writes
            self._saved = facts
