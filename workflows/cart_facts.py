"""What a cart workflow knows about its cart, as facts: what an event changes, the status
that follows from the facts and the clock, when it next changes by itself, what its
journey's messages are told about it, and the summary ops read in the Temporal UI.

No commands come from here: the cart workflow passes ``workflow.now()`` in and issues
whatever follows from the answers.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.carts import CartEvent, CartState, CartStatus, template_cart
    from contracts.rules import CART_ABANDONED


def apply(state: CartState, event: CartEvent, now: datetime) -> None:
    state.events_applied += 1
    if event.type == "order.placed":
        if event.cart_id is not None and event.cart_id != state.cart_id:
            # The customer ordered, but another cart: ends this journey only if its
            # rule says any order by the customer counts.
            state.ordered_elsewhere = state.ordered_elsewhere or event.order_id
            return
        state.status = CartStatus.converted
        state.order_id = event.order_id
        state.converted_at = event.occurred_at
        return
    # A backend clock running ahead must not push the idle deadline into the future.
    active_at = min(event.occurred_at, now)
    if state.last_activity_at is None or active_at > state.last_activity_at:
        state.last_activity_at = active_at
    snapshot = event.snapshot
    # Events can arrive out of order: the newest snapshot wins, not the last received.
    if snapshot is not None and (state.snapshot is None or snapshot.as_of >= state.snapshot.as_of):
        state.snapshot = snapshot
    if event.type == "checkout.started" and (
        state.checkout_started_at is None or active_at > state.checkout_started_at
    ):
        state.checkout_started_at = active_at


def derive_status(state: CartState, now: datetime) -> None:
    """The status follows from the facts: items, last activity, the clock."""
    if state.status in (CartStatus.converted, CartStatus.expired):
        return
    last = state.last_activity_at or now
    has_items = bool(state.snapshot and state.snapshot.items)
    if now >= last + state.expire_after and state.journey_status != "running":
        state.status = CartStatus.expired
    elif not has_items:
        state.status, state.abandoned_at = CartStatus.empty, None
    elif now >= last + state.idle_after:
        state.status = CartStatus.abandoned
        state.abandoned_at = last + state.idle_after
    else:
        state.status, state.abandoned_at = CartStatus.active, None


def next_deadline(state: CartState, now: datetime) -> datetime:
    last = state.last_activity_at or now
    if state.status is CartStatus.active:
        return last + state.idle_after
    return last + state.expire_after


def context(state: CartState) -> dict[str, object]:
    cart = template_cart(state.cart_id, state.snapshot)
    cart["checkout_started"] = state.checkout_started_at is not None
    return {"cart": cart, "event": {"type": CART_ABANDONED, "data": cart}}


def describe(state: CartState) -> str:
    """The plain-words summary ops read in the Temporal UI."""
    snapshot = state.snapshot
    contents = "no items"
    if snapshot and snapshot.items:
        count = sum(i.quantity for i in snapshot.items)
        contents = f"{count} item{'s' if count != 1 else ''}, {snapshot.currency} {snapshot.total}"
    since = state.last_activity_at.strftime("%Y-%m-%d %H:%M UTC") if state.last_activity_at else "-"
    lines = {
        CartStatus.active: f"**Active** cart: {contents}; last activity {since}.",
        CartStatus.empty: f"**Empty** cart; last activity {since}.",
        CartStatus.abandoned: (
            f"**Abandoned** cart: {contents}; idle since {since} "
            f"(abandoned after {state.idle_after})."
        ),
        CartStatus.converted: f"**Converted**: order {state.order_id} placed; cart had {contents}.",
        CartStatus.expired: f"**Expired**: no activity since {since}.",
    }
    journey = ""
    if state.journey is not None:
        rule = state.journey.rule
        sent = [s for s in state.journey.sent if s.status in ("sent", "delivered")]
        journey = (
            f"\n\nJourney: rule `{rule.rule_id}` v{rule.version}, "
            f"{len(sent)} message{'s' if len(sent) != 1 else ''} sent"
        )
        if sent:
            journey += f", last on {sent[-1].channel} at {sent[-1].at:%Y-%m-%d %H:%M} UTC"
        if rule.holdout:
            journey += " (held out: in the rule's holdout group, no message is sent)"
        if state.journey.exit_reason:
            journey += f"; ended: {state.journey.exit_reason}"
        elif state.journey.paused:
            journey += "; **paused by ops**: nothing goes out until resumed"
        elif state.status is CartStatus.active:
            journey += "; paused while the customer is active"
        journey += "."
    return (
        f"{lines[state.status]}{journey}\n\nCustomer `{state.customer_id}`, cart `{state.cart_id}`."
    )
