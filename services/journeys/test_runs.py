"""Test runs: a rule run now, for a named customer Sutra knows, its waits shortened.

A cart.abandoned rule runs as a cart workflow on a sample cart (the preview samples), held to
the rule under test; any other trigger starts its lifecycle journey with the trigger's sample
context. Either way the journey is marked a test, so it enters the rule whatever its status
(but archived) and ignores the re-entry policy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from config.settings import Settings
from contracts import search_attributes as sa
from contracts import workflow_ids
from contracts.carts import CartEvent, CartItem, CartSnapshot, StartCartInput
from contracts.errors import Conflict, NotFound, ServiceUnavailable
from contracts.lifecycle import LifecycleInput
from contracts.names import CART_WORKFLOW, EVENT_SIGNAL, LIFECYCLE_WORKFLOW
from contracts.rules import RuleDefinition
from db.models import Customer, Rule
from services.journeys import rules
from services.templating.samples import SAMPLES


@dataclass(frozen=True)
class TestRun:
    workflow_id: str
    cart_id: str | None = None  # the test cart, for cart.abandoned rules


async def start(
    session: AsyncSession,
    temporal: Client,
    settings: Settings,
    *,
    rule_id: str,
    customer_id: str,
    speed: float,
) -> TestRun:
    """Start a test run of the rule's current version; ``speed`` divides every wait."""
    rule = await rules.get(session, rule_id)
    if rule.status == "archived":
        raise Conflict("an archived rule cannot be tested")
    if await session.get(Customer, customer_id) is None:
        raise NotFound(f"no customer {customer_id!r}: send an event for them first")
    if rule.trigger_event != "cart.abandoned":
        return await _start_lifecycle_test(rule, customer_id, speed, settings, temporal)
    definition = RuleDefinition.model_validate(
        (await rules.version_of(session, rule_id, rule.version)).definition
    )
    cart_id = f"test-{uuid.uuid4().hex[:10]}"
    sample = SAMPLES["cart"]
    now = datetime.now(UTC)
    snapshot = CartSnapshot(
        currency=sample["currency"],
        items=[
            CartItem(
                sku=i["sku"],
                name=i["name"],
                quantity=i["quantity"],
                unit_price=Decimal(i["unit_price"]),
            )
            for i in sample["items"]
        ],
        total=Decimal(sample["total"]),
        checkout_url=sample["checkout_url"],
        as_of=now,
    )
    start = StartCartInput(
        cart_id=cart_id,
        customer_id=customer_id,
        idle_after=definition.trigger.idle_after,
        expire_after=settings.cart_expire_after,
        test_rule=rule_id,
        time_scale=speed,
    )
    signal = CartEvent(
        event_id=f"test-{cart_id}",
        type="cart.updated",
        occurred_at=now,
        customer_id=customer_id,
        snapshot=snapshot,
    )
    workflow_id = workflow_ids.cart(cart_id)
    try:
        await temporal.start_workflow(
            CART_WORKFLOW,
            start,
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
            start_signal=EVENT_SIGNAL,
            start_signal_args=[signal],
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.CUSTOMER_ID, customer_id),
                    SearchAttributePair(sa.CART_ID, cart_id),
                ]
            ),
            static_summary=f"Test run of rule {rule_id} for customer {customer_id}",
            rpc_timeout=timedelta(seconds=5),
        )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not start the test run: {exc.message}") from exc
    return TestRun(workflow_id=workflow_id, cart_id=cart_id)


def _sample_trigger_context(trigger: str) -> tuple[dict[str, Any], str | None]:
    """What a journey of this trigger is started with, from the preview samples."""
    if trigger in ("order.placed", "order.delivered"):
        return {"order": SAMPLES["order"]}, None
    if trigger in ("product.back_in_stock", "product.price_dropped", "back_in_stock.subscribed"):
        return {"product": SAMPLES["product"]}, None
    if trigger == "replenishment_due":
        return {"product": SAMPLES["product"]}, SAMPLES["product"]["sku"]
    return {}, None


async def _start_lifecycle_test(
    rule: Rule, customer_id: str, speed: float, settings: Settings, temporal: Client
) -> TestRun:
    context, sku = _sample_trigger_context(rule.trigger_event)
    journey = LifecycleInput(
        rule_id=rule.id,
        customer_id=customer_id,
        key=f"test-{uuid.uuid4().hex[:10]}",
        trigger=rule.trigger_event,
        context=context,
        triggered_at=datetime.now(UTC),
        sku=sku,
        time_scale=speed,
        test=True,
    )
    try:
        await temporal.start_workflow(
            LIFECYCLE_WORKFLOW,
            journey,
            id=journey.workflow_id,
            task_queue=settings.temporal_task_queue,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.CUSTOMER_ID, customer_id),
                    SearchAttributePair(sa.RULE_ID, rule.id),
                ]
            ),
            static_summary=f"Test run of rule {rule.id} for customer {customer_id}",
            rpc_timeout=timedelta(seconds=5),
        )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not start the test run: {exc.message}") from exc
    return TestRun(workflow_id=journey.workflow_id)
