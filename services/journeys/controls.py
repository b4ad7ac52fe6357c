"""Ops steering one journey: pause, resume or end it, through the journey workflow's
``journey_control`` update (workflows/cart.py, workflows/lifecycle.py).

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

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from contracts.errors import Conflict, NotFound, ServiceUnavailable
from contracts.journeys import (
    ENDED_BY_OPS,
    NOT_CONTROLLABLE,
    JourneyControl,
    JourneyControlResult,
)
from contracts.names import CART_WORKFLOW, JOURNEY_CONTROL_UPDATE, LIFECYCLE_WORKFLOW, STATE_QUERY

Action = Literal["pause", "resume", "end"]
JOURNEY_TYPES = frozenset({CART_WORKFLOW, LIFECYCLE_WORKFLOW})


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
        result = await handle.execute_update(
            JOURNEY_CONTROL_UPDATE,
            JourneyControl(action=action, by=by),
            result_type=JourneyControlResult,
            rpc_timeout=rpc_timeout,
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        waited = int(rpc_timeout.total_seconds())
        raise ServiceUnavailable(
            f"no worker answered within {waited} s; the {action} may still take effect when"
            f" they run: it is safe to ask again",
            headers={"Retry-After": str(max(1, min(waited, 30)))},
        ) from exc
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == NOT_CONTROLLABLE:
            raise Conflict(f"{workflow_id}: {cause.message}", workflow_type=kind) from exc
        raise ServiceUnavailable(f"the journey workflow failed the {action}: {exc}") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # it closed meanwhile
            raise Conflict(f"{workflow_id} has closed", workflow_type=kind) from exc
        raise ServiceUnavailable(f"Temporal did not answer: {exc.message}") from exc
    return Controlled(workflow_id, description.run_id, kind, result)


async def _ended_by_ops(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether a closed journey workflow's journey was ended by ops (a retried end)."""
    try:
        state = await handle.query(STATE_QUERY, rpc_timeout=timedelta(seconds=10))
    except (RPCError, WorkflowQueryFailedError):
        return False
    journey = state.get("journey") if isinstance(state, dict) else None
    return isinstance(journey, dict) and journey.get("ended_by") is not None
