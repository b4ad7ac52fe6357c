"""What an order tells the outside, beside its own sequence: messages to the customer, in
the order the order sent them, and webhooks to the shop, retried for days.

Not a workflow itself: the order workflow holds a ``Notices`` and waits for its
``tasks`` before it ends, so the customer's last messages still go out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import workflows.order_words as words
    from contracts.messages import Channel, MessageRequest
    from contracts.orders import NOTIFY_SHOP, OrderState, ShopNotice
    from contracts.retry_policies import SHOP_RETRY
    from workflows.messaging import Messenger


@dataclass
class _Flag:
    done: bool = False

    def set(self) -> None:
        self.done = True


class Notices:
    def __init__(
        self,
        state: OrderState,
        messenger: Messenger,
        *,
        record: Callable[[str, str | None], None],
        context: Callable[[], dict[str, object]],
        timeout: timedelta,
    ) -> None:
        self._state = state
        self._messenger = messenger
        self._record = record
        self._context = context
        self._timeout = timeout
        self.tasks: list[asyncio.Task[None]] = []
        self._last_dispatch: _Flag | None = None

    def all_out(self) -> bool:
        return all(task.done() for task in self.tasks)

    def send(self, template: str, channels: list[Channel], *, key: str | None = None) -> None:
        state = self._state
        assert state.customer_id is not None
        request = MessageRequest(
            key=f"{workflow.info().workflow_id}/{key or template}",
            customer_id=state.customer_id,
            channels=channels,
            template=template,
            kind="transactional",
            context={"order": self._context()},
            quiet_hours=None,
            frequency_cap=timedelta(0),
            workflow_id=workflow.info().workflow_id,
            step=key or template,
            order_id=state.order_id,
        )

        # Each message goes out after the previous one was handed over: "delivered" never
        # overtakes "shipped" when both events arrive at once.
        previous, mine = self._last_dispatch, _Flag()
        self._last_dispatch = mine

        async def send() -> None:
            if previous is not None:
                await workflow.wait_condition(lambda: previous.done)
            try:
                await self._messenger.send(request, dispatched=mine.set)
            finally:
                mine.set()

        self.tasks.append(asyncio.create_task(send()))

    async def tell_shop(self, type: str, data: dict[str, object]) -> None:
        notice = ShopNotice(
            key=f"{workflow.info().workflow_id}/{type}",
            type=type,
            order_id=self._state.order_id,
            data={"status": self._state.status.value, **data},
            at=workflow.now(),
        )
        self._record("sutra", words.told_shop(type))

        async def deliver() -> None:
            with contextlib.suppress(ActivityError):  # after a week of trying, ops must look
                await workflow.execute_activity(
                    NOTIFY_SHOP,
                    notice,
                    result_type=str,
                    start_to_close_timeout=self._timeout,
                    schedule_to_close_timeout=timedelta(days=7),
                    retry_policy=SHOP_RETRY,
                )

        self.tasks.append(asyncio.create_task(deliver()))
