"""Contracts of lifecycle journeys: one workflow per customer per rule (per occurrence),
``journey/{rule_id}/{customer_id}[/{key}]``, started by an event, the time-trigger sweep or
a product fan-out, running the rule's steps with the shared step interpreter."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts import workflow_ids
from contracts.journeys import JourneyState, PinnedRule

ENTER_LIFECYCLE = "enter_lifecycle"


class LifecycleInput(BaseModel):
    rule_id: str
    customer_id: str
    # What makes this journey one of several of the customer on the rule: an order id, a
    # birthday year, an inactivity spell, a product event. None: one per customer.
    key: str | None = None
    trigger: str
    # Template variables from what started it: {"order": {...}}, {"product": {...}}.
    context: dict[str, Any] = Field(default_factory=dict)
    triggered_at: datetime
    # Replenishment: the product whose re-purchase ends the journey.
    sku: str | None = None
    time_scale: float = 1.0
    # A marketer's test run (POST /v1/rules/{id}/test): any status but archived, no
    # re-entry policy, no quiet hours or caps, not counted in analytics.
    test: bool = False

    @property
    def workflow_id(self) -> str:
        return workflow_ids.journey(self.rule_id, self.customer_id, self.key)


class LifecycleEvent(BaseModel):
    """Signal ``event``: something the customer did that may end or credit the journey."""

    event_id: str
    type: Literal["order.placed", "unsubscribed"]
    occurred_at: datetime
    order_id: str | None = None
    skus: list[str] = Field(default_factory=list)


class EnterLifecycleInput(BaseModel):
    rule_id: str
    customer_id: str
    workflow_id: str
    run_id: str
    trigger: str
    triggered_at: datetime
    context: dict[str, Any] = Field(default_factory=dict)
    test: bool = False


class EnterLifecycleResult(BaseModel):
    rule: PinnedRule | None = None
    # Why the customer did not enter: "rule_not_active", "conditions", "reentry", ...
    refused: str | None = None


class LifecycleState(BaseModel):
    rule_id: str
    customer_id: str
    key: str | None = None
    trigger: str
    status: Literal["entering", "running", "ended", "not_entered"] = "entering"
    refused: str | None = None
    journey: JourneyState | None = None
    orders: list[str] = Field(default_factory=list)
    exit_reason: str | None = None


class JourneyStart(BaseModel):
    """One journey a sweep or fan-out starts for a claimed occurrence."""

    rule_id: str
    customer_id: str
    occurrence: str
    trigger: str
    triggered_at: datetime
    context: dict[str, Any] = Field(default_factory=dict)
    sku: str | None = None

    def input(self) -> LifecycleInput:
        return LifecycleInput(
            rule_id=self.rule_id,
            customer_id=self.customer_id,
            key=self.occurrence,
            trigger=self.trigger,
            context=self.context,
            triggered_at=self.triggered_at,
            sku=self.sku,
        )
