"""Ops moving an order: a ``transition_requested`` signal naming the move by a request id,
then the order workflow's ``transition_outcome`` query read until its main loop has judged
it (workflows/order.py).

A signal, not the update ``transition`` the API used before: a cache-free order worker
once failed an order's every task on replay ("Activity machine does not handle this event:
WorkflowExecutionUpdateCompleted") right after an accepted move, the family of
temporalio/sdk-python#1591 (README "Known upstream issues"). A signal is an ordinary event
in the history, applied by the same main loop as the shop's events, so a move is judged
after every event that reached the order before it, never on a state the reads have
already left behind. Signalling twice with one request id applies the move once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from contracts import workflow_ids
from contracts.errors import ServiceUnavailable
from contracts.names import TRANSITION_OUTCOME_QUERY, TRANSITION_SIGNAL
from contracts.orders import OrderState, TransitionOutcome, TransitionRequest, TransitionSignal

_READ = timedelta(seconds=10)  # one outcome read
_POLL = 0.05  # seconds between reads while the move is on its way
# A query no worker takes times out (on our side or the server's), or, once no worker has
# polled the queue for a while, is refused at once ("no poller seen for task queue").
_NO_ANSWER_YET = frozenset(
    {RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.FAILED_PRECONDITION}
)


class Refused(Exception):
    """The order cannot make this move now; ``status`` is where it stands."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class Unanswered(Exception):
    """No worker judged the move within the wait; it takes effect once one runs."""


class Closed(Exception):
    """The order's workflow has ended (or never was): Temporal took no signal."""


async def move(
    temporal: Client, order_id: str, request: TransitionRequest, *, within: timedelta
) -> OrderState:
    """The order's state once the move is applied; ``Refused``, ``Unanswered`` (after
    ``within``) or ``Closed`` otherwise. Temporal not answering is a 503."""
    handle = temporal.get_workflow_handle(workflow_ids.order(order_id))
    signal = TransitionSignal(request_id=uuid.uuid4().hex, request=request)
    try:
        await handle.signal(TRANSITION_SIGNAL, signal, rpc_timeout=_READ)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Closed(order_id) from exc
        raise ServiceUnavailable(f"Temporal did not answer: {exc.message}") from exc
    outcome = await _judged(handle, signal.request_id, within)
    if outcome is None:
        raise Unanswered(order_id)
    if outcome.error is not None:
        raise Refused(outcome.error, outcome.state.status.value)
    return outcome.state


async def _judged(
    handle: WorkflowHandle[object, object], request_id: str, within: timedelta
) -> TransitionOutcome | None:
    deadline = time.monotonic() + within.total_seconds()
    while True:
        left = timedelta(seconds=max(deadline - time.monotonic(), 1))
        try:
            outcome = await handle.query(
                TRANSITION_OUTCOME_QUERY,
                request_id,
                result_type=TransitionOutcome,
                rpc_timeout=min(_READ, left),
            )
        except WorkflowQueryFailedError as exc:
            raise ServiceUnavailable(
                f"the move is recorded, but the order could not say how it stands: {exc}"
            ) from exc
        except RPCError as exc:
            # A worker that is down or behind answers no query: wait for it as for the move.
            if exc.status not in _NO_ANSWER_YET:
                raise ServiceUnavailable(
                    f"the move is recorded, but Temporal did not answer: {exc.message}"
                ) from exc
            outcome = None
        if outcome is not None and outcome.done:
            return outcome
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(_POLL)
