"""What reached an order and waits for its main loop: events and customer replies (each
taken once, though delivered at least once), ops' transitions awaiting their answer, and
the events that came ahead of the order, kept until it catches up.

Not a workflow itself: the order workflow's signal and update handlers put into its
``Inbox`` and only the main loop takes out, so one writer applies them in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.messages import InboundMessageSignal
    from contracts.orders import (
        NEXT,
        RANK,
        TERMINAL,
        OrderEvent,
        OrderState,
        OrderStatus,
        PlacedOrder,
        TransitionOutcome,
        TransitionRequest,
        TransitionSignal,
    )

_WAIT_FOR_PLACEMENT = timedelta(days=7)


@dataclass
class Command:
    """An ops transition waiting for the main loop: its answer is read back by query
    (a signalled move) or awaited by the update handler (the older way)."""

    request: TransitionRequest
    done: bool = False
    error: str | None = None


Item = OrderEvent | Command | InboundMessageSignal


class Inbox:
    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._items: list[Item] = []
        self.early: list[OrderEvent] = []
        self._moves: dict[str, Command] = {}

    def event(self, event: OrderEvent) -> None:
        if event.event_id in self._seen:  # delivery is at least once
            return
        self._seen.add(event.event_id)
        self._items.append(event)

    def reply(self, signal: InboundMessageSignal) -> None:
        key = f"inbound:{signal.inbound_id}"
        if key not in self._seen:
            self._seen.add(key)
            self._items.append(signal)

    def command(self, request: TransitionRequest) -> Command:
        command = Command(request)
        self._items.append(command)
        return command

    def move(self, signal: TransitionSignal) -> None:
        if signal.request_id not in self._moves:  # delivery is at least once
            self._moves[signal.request_id] = self.command(signal.request)

    def outcome(self, request_id: str, state: OrderState) -> TransitionOutcome:
        command = self._moves.get(request_id)
        if command is None:
            return TransitionOutcome(request_id=request_id, state=state)
        return TransitionOutcome(
            request_id=request_id,
            known=True,
            done=command.done,
            error=command.error,
            state=state,
        )

    def pending(self) -> bool:
        return bool(self._items)

    def take(self) -> list[Item]:
        items, self._items = self._items, []
        return items

    async def placement(self) -> PlacedOrder | None:
        """Events may overtake ``order.placed`` (a webhook racing the backend): keep them."""

        def placed() -> bool:
            return any(isinstance(i, OrderEvent) and i.placed for i in self._items)

        try:
            await workflow.wait_condition(placed, timeout=_WAIT_FOR_PLACEMENT)
        except TimeoutError:
            return None
        for item in list(self._items):
            if isinstance(item, OrderEvent) and item.placed is not None:
                self._items.remove(item)
                return item.placed
        return None


def arrival(current: OrderStatus, to: OrderStatus) -> Literal["next", "stale", "early"]:
    """Where an event that moves the order to ``to`` stands: the order's next step, behind
    it (stale or repeated: the order is past it), or ahead of it (early: kept until the
    order catches up)."""
    if to in NEXT[current]:
        return "next"
    if current in TERMINAL or RANK[to] <= RANK[current]:
        return "stale"
    return "early"
