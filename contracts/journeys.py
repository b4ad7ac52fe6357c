"""Contracts of journeys: entering a rule, its coupons, exits and attribution."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

ENTER_JOURNEY = "enter_journey"
CUSTOMER_CONTEXT = "customer_context"
ISSUE_COUPON = "issue_coupon"
REVOKE_COUPON = "revoke_coupon"
SUPERSEDE_COUPONS = "supersede_coupons"
EXIT_JOURNEY = "exit_journey"
ATTRIBUTE_ORDER = "attribute_order"
# Journeys in a holdout group issue no coupon (their messages are held out, not sent).
HOLDOUT_PATCH = "holdout-no-send"


class PinnedRule(BaseModel):
    """The rule version a journey entered with; it runs to the end on this version."""

    rule_id: str
    version: int
    definition: dict[str, Any]
    # In the rule's holdout group: tracked for the goal like the others, sent nothing.
    holdout: bool = False


class EnterJourneyInput(BaseModel):
    trigger: str
    customer_id: str
    workflow_id: str
    cart_id: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    only_rule: str | None = None  # test mode: this rule, whatever its status
    test: bool = False


class EnterJourneyResult(BaseModel):
    rule: PinnedRule | None = None


class CustomerContextInput(BaseModel):
    customer_id: str


class CustomerContextResult(BaseModel):
    customer: dict[str, Any]


class IssueCouponInput(BaseModel):
    issue_key: str
    percent_off: int
    expires_in: timedelta
    customer_id: str
    cart_id: str | None
    rule_id: str
    rule_version: int
    step: str
    source: Literal["sutra", "shop"] = "sutra"


class IssueCouponResult(BaseModel):
    code: str
    percent_off: int
    expires_at: datetime


class RevokeCouponInput(BaseModel):
    code: str
    reason: str


class ExitJourneyInput(BaseModel):
    workflow_id: str
    rule_id: str
    reason: str


class AttributeOrderInput(BaseModel):
    order_id: str
    customer_id: str
    cart_id: str | None
    window: timedelta


class AttributeOrderResult(BaseModel):
    message_id: str | None = None
    rule_id: str | None = None
    step: str | None = None
    revenue: str | None = None
    discount: str | None = None


class RulePaused(BaseModel):
    """Signal ``rule_paused``: the rule was paused with its running journeys ended."""

    rule_id: str


class SentStep(BaseModel):
    path: str
    channel: str | None
    status: str
    message_id: str | None = None
    coupon_code: str | None = None
    at: datetime


class JourneyState(BaseModel):
    rule: PinnedRule
    instance: str = Field(
        description="The run that entered: keys stay unique if the cart is reused"
    )
    pc: int = 0
    # When the step before the current one began: waits count from there, so a send that
    # took a while (quiet hours, watching for a bounce) does not push the schedule back.
    clock: datetime | None = None
    variant: str | None = None
    sent: list[SentStep] = Field(default_factory=list)
    exit_reason: str | None = None
    attributed_order: str | None = None
    # Ops' hold (POST /v1/journeys/{id}/pause): nothing goes out while true; waits keep
    # their clock, so a step that fell due meanwhile goes out on resume.
    paused: bool = False
    # The API key name that ended it (POST /v1/journeys/{id}/end): exit "ended_by_ops".
    ended_by: str | None = None


ENDED_BY_OPS = "ended_by_ops"
# The ApplicationError type a journey's control update is refused with.
NOT_CONTROLLABLE = "journey_not_controllable"


class JourneyControl(BaseModel):
    """Signal ``journey_control_requested`` (once update ``journey_control``): ops pause,
    resume or end one running journey."""

    action: Literal["pause", "resume", "end"]
    by: str | None = None  # the API key's name, set by the API


class JourneyControlResult(BaseModel):
    status: Literal["running", "paused", "ended"]
    exit_reason: str | None = None


def control_refusal(journey: JourneyState | None, running: bool, action: str) -> str | None:
    """Why ``action`` cannot apply to this journey now, or None. Asking again for what is
    already so (pausing a paused journey, ending one ops ended) is no refusal: a retried
    request answers the same."""
    if journey is None:
        return "this workflow has not entered a journey"
    if action == "end" and journey.ended_by is not None:
        return None
    if not running or journey.exit_reason is not None:
        return f"the journey has ended ({journey.exit_reason or 'ended'})"
    return None


def apply_control(journey: JourneyState | None, running: bool, request: JourneyControl) -> bool:
    """Ops' control, by signal: what the update did, less its answer (the API reads the
    state for that). A control the journey cannot take now changes nothing. True when the
    journey's pause flag changed, so its search attributes must be published."""
    if journey is None or control_refusal(journey, running, request.action) is not None:
        return False
    if request.action == "end":
        journey.ended_by = journey.ended_by or request.by or "ops"
        return False
    paused = request.action == "pause"
    changed = journey.paused != paused
    journey.paused = paused
    return changed


def control_status(journey: JourneyState, running: bool) -> JourneyControlResult:
    if not running or journey.exit_reason is not None:
        return JourneyControlResult(status="ended", exit_reason=journey.exit_reason)
    return JourneyControlResult(status="paused" if journey.paused else "running")
