"""Deliveries to a workflow that has ended: told to the ended order or cart, never a fresh
run that waits a week for a placement that happened long ago.

The dispatcher comes here when a signal finds no running workflow, or a signal-with-start
finds one that ended (it starts nothing over a closed run). What an ended order still acts
on is the order's own business (``contracts.orders.AFTER_END``): money arriving after a
cancellation is refunded, a parcel scanned delivered can still come back, a refund the
shop made is recorded. For those, a new run continues from the ended run's own state (its
result carries it). A cart that expired and is active again lives again; a cart that became
an order stays an order. Everything else is recorded against the ended workflow
(``delivered_to_closed``, with the reason) and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from contracts.carts import CartResult, CartStatus
from contracts.names import CART_WORKFLOW, ORDER_WORKFLOW, STATE_QUERY
from contracts.orders import AFTER_END, OrderResult, OrderState, StartOrderInput

DELIVERED_TO_CLOSED = "delivered_to_closed"
# Workflow types whose deliveries are judged here when their workflow has ended; the others
# (lifecycle journeys hearing of an order) have nothing to do once they ended.
JUDGED = frozenset({ORDER_WORKFLOW, CART_WORKFLOW})
_CART_ACTIVITY = frozenset({"cart.updated", "checkout.started"})


@dataclass(frozen=True)
class Outcome:
    status: str  # "delivered" (a running or new run has it) or DELIVERED_TO_CLOSED
    detail: str | None = None


async def deliver_to_ended(
    client: Client, route: Any, task_queue: str, rpc_timeout: timedelta
) -> Outcome:
    """Deliver ``route`` (a stored event route) to its workflow, which was not running when
    the dispatcher tried. RPC errors propagate: the dispatcher retries the route."""
    workflow_id = route["workflow_id"]
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe(rpc_timeout=rpc_timeout)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        if route["workflow_type"] != ORDER_WORKFLOW:
            return Outcome("skipped")  # no such cart (any more): nobody to tell
        # Only placed orders get signal-only routes: this one existed.
        return Outcome(
            DELIVERED_TO_CLOSED,
            f"{workflow_id} has ended and Temporal no longer keeps it (past the namespace's "
            "retention): the event changes nothing",
        )
    if described.status == WorkflowExecutionStatus.RUNNING:
        # It started (or was reopened) meanwhile: an ordinary delivery.
        await handle.signal(route["signal_name"], route["signal_payload"], rpc_timeout=rpc_timeout)
        return Outcome("delivered")
    status = described.status.name.lower() if described.status else "closed"
    ended = f"{workflow_id} ended ({status}, run {described.run_id})"
    if described.status != WorkflowExecutionStatus.COMPLETED:
        return Outcome(DELIVERED_TO_CLOSED, f"{ended}: the event changes nothing")
    event_type = str(route["signal_payload"].get("type", ""))
    if route["workflow_type"] == ORDER_WORKFLOW:
        return await _to_ended_order(client, route, task_queue, rpc_timeout, event_type)
    result = await client.get_workflow_handle(workflow_id, result_type=CartResult).result(
        rpc_timeout=rpc_timeout
    )
    # A late cart event (kind "signal", see routing) reaches a running cart but starts none.
    revives = route["kind"] == "signal_with_start" and event_type in _CART_ACTIVITY
    if result.status is CartStatus.expired and revives:
        # Idle for weeks, then active again: the same cart id has a new life.
        await _start(client, route, task_queue, rpc_timeout, route["start_input"])
        return Outcome("delivered", f"cart had expired; {event_type} started it again")
    return Outcome(DELIVERED_TO_CLOSED, f"cart {result.status.value}: {event_type} changes nothing")


async def _to_ended_order(
    client: Client, route: Any, task_queue: str, rpc_timeout: timedelta, event_type: str
) -> Outcome:
    workflow_id = route["workflow_id"]
    result = await client.get_workflow_handle(workflow_id, result_type=OrderResult).result(
        rpc_timeout=rpc_timeout
    )
    state = result.state
    if state is None:
        # It ended before results carried the state: ask the ended run (a worker replays it).
        state = await client.get_workflow_handle(workflow_id).query(
            STATE_QUERY, result_type=OrderState, rpc_timeout=rpc_timeout
        )
    ended = f"order ended {state.status.value}"
    if state.placed_at is None:
        return Outcome(DELIVERED_TO_CLOSED, f"the order was never placed: {event_type} is late")
    if event_type not in AFTER_END.get(state.status, frozenset()):
        return Outcome(DELIVERED_TO_CLOSED, f"{ended}: {event_type} changes nothing")
    start = StartOrderInput(order_id=state.order_id, reopened=state)
    await _start(client, route, task_queue, rpc_timeout, start)
    return Outcome(DELIVERED_TO_CLOSED, f"{ended}; reopened for {event_type}")


async def _start(
    client: Client, route: Any, task_queue: str, rpc_timeout: timedelta, start_input: Any
) -> None:
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
        for name, value in (route["search_attributes"] or {}).items()
    ]
    await client.start_workflow(
        route["workflow_type"],
        start_input,
        id=route["workflow_id"],
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=route["signal_name"],
        start_signal_args=[route["signal_payload"]],
        search_attributes=TypedSearchAttributes(pairs),
        static_summary=route["summary"],
        rpc_timeout=rpc_timeout,
    )
