"""Ops steering one journey: pause, resume or end it, through the journey workflow's
``journey_control_requested`` signal (workflows/cart.py, workflows/lifecycle.py), then
reading its state until the control shows.

A signal, not an update: on a worker that caches workflows, an update accepted next to a
cold worker's query can leave a history no code replays (temporalio/sdk-python#1591; the
orders, which need their update's answer, run on cache-free workers instead). The refusal
an update's validator gave is worked out here from the same state, by the same function
(``contracts.journeys.control_refusal``), and the workflow applies a signal only if it
still can: a journey that ended in between simply answers "ended".

A paused journey sends nothing until resumed. Its waits keep their clock: time paused
counts, and a step that fell due during the pause goes out once resumed (one step: the
wait after it counts from that send). A message already deferred for quiet hours or a cap
waits for the resume too; a bounce's next channel as well. Ending records the exit reason
``ended_by_ops`` on the journey's entry, as any other exit; a cart's journey ends and the
cart's workflow goes on remembering the cart, a lifecycle journey's workflow closes.
Asking again for what is already so (pause a paused journey, end one ops ended) answers the
same; anything else a journey cannot do now is a 409 saying why.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from contracts.carts import CartState
from contracts.errors import Conflict, NotFound, ServiceUnavailable
from contracts.journeys import (
    ENDED_BY_OPS,
    JourneyControl,
    JourneyControlResult,
    JourneyState,
    control_refusal,
    control_status,
)
from contracts.lifecycle import LifecycleState
from contracts.names import CART_WORKFLOW, JOURNEY_CONTROL_SIGNAL, LIFECYCLE_WORKFLOW, STATE_QUERY

Action = Literal["pause", "resume", "end"]
JOURNEY_TYPES = frozenset({CART_WORKFLOW, LIFECYCLE_WORKFLOW})
_READ = timedelta(seconds=10)  # one state read
_POLL = 0.05  # between reads while the control is on its way


@dataclass(frozen=True)
class Controlled:
    workflow_id: str
    run_id: str
    workflow_type: str
    result: JourneyControlResult


async def control(
    temporal: Client, workflow_id: str, action: Action, *, by: str | None, rpc_timeout: timedelta
) -> Controlled:
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no workflow {workflow_id!r}") from exc
        raise ServiceUnavailable(f"Temporal did not answer: {exc.message}") from exc
    kind = description.workflow_type
    if kind not in JOURNEY_TYPES:
        raise Conflict(
            f"{workflow_id} is a {kind}, not a journey: only cart and lifecycle journeys are"
            " paused, resumed or ended here (orders move by POST /v1/orders/{id}/transitions)",
            workflow_type=kind,
        )
    if description.close_time is not None:
        if action == "end" and await _ended_by_ops(handle):
            ended = JourneyControlResult(status="ended", exit_reason=ENDED_BY_OPS)
            return Controlled(workflow_id, description.run_id, kind, ended)
        raise Conflict(
            f"{workflow_id} has closed ({description.status.name if description.status else '?'})"
            f": its journey cannot {action}",
            workflow_type=kind,
        )
    try:
        journey, running = await _journey(handle, kind)
        refusal = control_refusal(journey, running, action)
        if refusal is not None:
            raise Conflict(f"{workflow_id}: {refusal}", workflow_type=kind)
        await handle.signal(
            JOURNEY_CONTROL_SIGNAL, JourneyControl(action=action, by=by), rpc_timeout=rpc_timeout
        )
        result = await _until_shown(handle, kind, action, rpc_timeout)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # it closed meanwhile
            raise Conflict(f"{workflow_id} has closed", workflow_type=kind) from exc
        raise ServiceUnavailable(f"Temporal did not answer: {exc.message}") from exc
    if result is None:
        waited = int(rpc_timeout.total_seconds())
        raise ServiceUnavailable(
            f"no worker showed the {action} within {waited} s; it takes effect when they run:"
            " it is safe to ask again",
            headers={"Retry-After": str(max(1, min(waited, 30)))},
        )
    return Controlled(workflow_id, description.run_id, kind, result)


async def _journey(handle: WorkflowHandle[Any, Any], kind: str) -> tuple[JourneyState | None, bool]:
    """The journey's state as its workflow reports it, and whether it is running."""
    try:
        if kind == CART_WORKFLOW:
            cart = await handle.query(STATE_QUERY, result_type=CartState, rpc_timeout=_READ)
            return cart.journey, cart.journey_status == "running"
        life = await handle.query(STATE_QUERY, result_type=LifecycleState, rpc_timeout=_READ)
    except WorkflowQueryFailedError as exc:
        raise ServiceUnavailable(f"the journey workflow could not say its state: {exc}") from exc
    running = life.status == "running" and life.exit_reason is None
    return life.journey, running


async def _until_shown(
    handle: WorkflowHandle[Any, Any], kind: str, action: Action, within: timedelta
) -> JourneyControlResult | None:
    """The journey's status once its state shows the control (or that it ended), None if
    it does not within ``within``."""
    deadline = time.monotonic() + within.total_seconds()
    wanted = {"pause": "paused", "resume": "running", "end": "ended"}[action]
    while True:
        journey, running = await _journey(handle, kind)
        assert journey is not None  # it had one when the control was sent
        result = control_status(journey, running)
        if result.status in (wanted, "ended"):
            return result
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(_POLL)


async def _ended_by_ops(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether a closed journey workflow's journey was ended by ops (a retried end)."""
    try:
        state = await handle.query(STATE_QUERY, rpc_timeout=timedelta(seconds=10))
    except (RPCError, WorkflowQueryFailedError):
        return False
    journey = state.get("journey") if isinstance(state, dict) else None
    return isinstance(journey, dict) and journey.get("ended_by") is not None
