"""Automation rules as marketers write them (API.md, "Rules"), and the program a journey
runs: the step tree compiled to a flat list of operations, the same every time for the
same definition, so a position in it survives pauses, restarts and continue-as-new."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from contracts.attribution import Windows
from contracts.conditions import Condition
from contracts.messages import Channel, QuietHours

RuleStatus = Literal["draft", "active", "paused", "archived"]
CART_ABANDONED = "cart.abandoned"
# Events that start a journey the moment they are accepted.
EVENT_TRIGGERS = (
    CART_ABANDONED,
    "customer.created",
    "order.placed",
    "order.delivered",
    "product.back_in_stock",
    "back_in_stock.subscribed",
    "product.price_dropped",
)
# Time triggers: found by the hourly time-trigger sweep in the database, not by an event.
BIRTHDAY = "birthday"
PURCHASE_ANNIVERSARY = "purchase_anniversary"
INACTIVITY = "inactivity"
REPLENISHMENT_DUE = "replenishment_due"
TIME_TRIGGERS = (BIRTHDAY, PURCHASE_ANNIVERSARY, INACTIVITY, REPLENISHMENT_DUE)
# Triggers whose journeys the fan-out sends to many customers at once (one per product).
FANOUT_TRIGGERS = ("product.back_in_stock", "product.price_dropped")
TriggerEvent = Literal[
    "cart.abandoned",
    "customer.created",
    "order.placed",
    "order.delivered",
    "product.back_in_stock",
    "back_in_stock.subscribed",
    "product.price_dropped",
    "birthday",
    "purchase_anniversary",
    "inactivity",
    "replenishment_due",
]
_DEFAULT_AFTER = {CART_ABANDONED: timedelta(hours=1), INACTIVITY: timedelta(days=90)}


def _positive_duration(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"duration {value!r} is negative")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_positive_duration),
    Field(description="ISO 8601 duration, e.g. PT1H, P2D"),
]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("duration must be longer than zero")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trigger(_Strict):
    event: TriggerEvent
    after: Duration | None = Field(
        default=None,
        description="cart.abandoned: how long a cart must be idle (default PT1H); "
        "inactivity: how long since the last order (default P90D)",
    )
    at: time | None = Field(
        default=None,
        description="birthday, purchase_anniversary: the local time in the customer's time "
        "zone the journey starts at (default 10:00)",
    )

    @field_validator("after")
    @classmethod
    def _after(cls, value: timedelta | None) -> timedelta | None:
        return None if value is None else _positive(value)

    @model_validator(mode="after")
    def _defaults(self) -> Trigger:
        if self.after is not None and self.event not in _DEFAULT_AFTER:
            raise ValueError(f"after applies to cart.abandoned and inactivity, not {self.event}")
        if self.at is not None and self.event not in (BIRTHDAY, PURCHASE_ANNIVERSARY):
            raise ValueError(f"at applies to birthday and purchase_anniversary, not {self.event}")
        if self.after is None and self.event in _DEFAULT_AFTER:
            self.after = _DEFAULT_AFTER[self.event]
        if self.at is None and self.event in (BIRTHDAY, PURCHASE_ANNIVERSARY):
            self.at = time(10, 0)
        return self

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # "after" and "at" belong to some triggers only: absent, not null, on the others.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}

    @property
    def idle_after(self) -> timedelta:
        """cart.abandoned's idle time (always set for that trigger)."""
        return self.after or timedelta(hours=1)


class Incentive(_Strict):
    percent_off: int = Field(ge=1, le=100)
    expires_in: Duration = timedelta(days=2)
    # "sutra" mints single-use codes itself; "shop" asks the shop's coupon endpoint.
    source: Literal["sutra", "shop"] = "sutra"

    @field_validator("expires_in")
    @classmethod
    def _expires(cls, value: timedelta) -> timedelta:
        return _positive(value)


class Send(_Strict):
    channels: list[Channel] = Field(min_length=1, description="Preference order")
    template: str = Field(min_length=1, max_length=100)
    incentive: Incentive | None = None
    # "first": the first channel the customer can receive on; "all": each of them.
    mode: Literal["first", "all"] = "first"
    cap_policy: Literal["defer", "skip"] = "defer"

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[Channel]) -> list[Channel]:
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value


class WaitStep(_Strict):
    wait: Duration

    @field_validator("wait")
    @classmethod
    def _wait(cls, value: timedelta) -> timedelta:
        return _positive(value)


class WaitUntilStep(_Strict):
    wait_until: time = Field(description="Local time in the customer's time zone, e.g. 10:00")


class SendStep(_Strict):
    send: Send


class Branch(_Strict):
    if_: Condition = Field(alias="if")
    then: list[Step] = Field(min_length=1)
    else_: list[Step] = Field(default_factory=list, alias="else")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BranchStep(_Strict):
    branch: Branch


class Variant(_Strict):
    weight: int = Field(ge=0, le=100)
    name: str | None = Field(default=None, max_length=50)
    steps: list[Step]


class SplitStep(_Strict):
    split: list[Variant] = Field(min_length=2, max_length=10)

    @field_validator("split")
    @classmethod
    def _weights(cls, value: list[Variant]) -> list[Variant]:
        total = sum(v.weight for v in value)
        if total != 100:
            raise ValueError(f"split weights must add up to 100, not {total}")
        # A name is part of every send path below it ("2.a.0"): unique, and without dots.
        names = [v.name or f"v{n + 1}" for n, v in enumerate(value)]
        if len(set(names)) != len(names) or any("." in name for name in names):
            raise ValueError(f"variant names must be unique and without '.', got {names}")
        return value


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = list(value)
        return keys[0] if len(keys) == 1 else None
    kinds: dict[type, str] = {
        WaitStep: "wait",
        WaitUntilStep: "wait_until",
        SendStep: "send",
        BranchStep: "branch",
        SplitStep: "split",
    }
    return kinds.get(type(value))


Step = Annotated[
    Annotated[WaitStep, Tag("wait")]
    | Annotated[WaitUntilStep, Tag("wait_until")]
    | Annotated[SendStep, Tag("send")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[SplitStep, Tag("split")],
    Discriminator(
        _step_kind,
        custom_error_type="step",
        custom_error_message="a step is exactly one of {wait}, {wait_until}, {send}, "
        "{branch} or {split}",
    ),
]


ExitEvent = Literal["order.placed", "cart.emptied", "unsubscribed"]


class Exit(_Strict):
    # Events that end a running journey at once, even in the middle of a wait.
    events: list[ExitEvent] = Field(
        default_factory=lambda: list(get_args(ExitEvent)),
    )
    # An order ends it when placed for this cart, or by this customer for any cart.
    order_scope: Literal["cart", "customer"] = "cart"
    # Checked before every send, on fresh data.
    conditions: Condition | None = None


class Goal(_Strict):
    event: Literal["order.placed"] = "order.placed"


class Reentry(_Strict):
    policy: Literal["every_time", "once", "once_per"] = "every_time"
    period: Duration | None = None

    @model_validator(mode="after")
    def _period(self) -> Reentry:
        if (self.policy == "once_per") != (self.period is not None):
            raise ValueError("period goes with policy once_per, and only with it")
        return self


class ExperimentSettings(_Strict):
    """How the A/B test of the rule's split steps is judged: a winner is declared only when
    a two-proportion z-test on conversions reaches ``confidence`` and every variant has
    ``min_sample`` journeys; then, if ``send_all_to_winner``, every later journey takes it."""

    confidence: float = Field(default=0.95, ge=0.8, le=0.999)
    min_sample: int = Field(default=1000, ge=10, le=10_000_000)
    send_all_to_winner: bool = False


class RuleDefinition(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    trigger: Trigger
    conditions: Condition | None = None
    steps: list[Step] = Field(min_length=1, max_length=100)
    exit: Exit = Field(default_factory=Exit)
    goal: Goal = Field(default_factory=Goal)
    # Absent: the installation's quiet hours; null: this rule ignores them.
    quiet_hours: QuietHours | Literal["default"] | None = "default"
    attribution_window: Duration = timedelta(days=5)  # the goal: orders this long after entry
    attribution_windows: Windows | None = None  # per channel, over the attribution model's
    holdout_percent: int = Field(default=0, ge=0, le=50, description="Held out: no messages")
    reentry: Reentry = Field(default_factory=Reentry)
    priority: int = Field(
        default=100, ge=0, le=10_000, description="Lower first when several rules match"
    )
    experiment: ExperimentSettings = Field(default_factory=ExperimentSettings)

    @field_validator("attribution_window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        return _positive(value)


Branch.model_rebuild()
Variant.model_rebuild()
SplitStep.model_rebuild()
BranchStep.model_rebuild()
RuleDefinition.model_rebuild()

# Longer than any wait, window or coupon a journey has use for; past it, the moment a
# duration points to (now + P999999999D) is beyond year 9999 and no date-time holds it.
MAX_DURATION = timedelta(days=3650)


def durations_too_long(model: BaseModel, loc: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Field errors (``{"loc", "msg"}``) for every duration in a rule over MAX_DURATION.

    Checked where rules come in (the API), not as a validator: a journey already running
    on a stored rule must still load it."""
    problems: list[dict[str, Any]] = []

    def visit(value: Any, where: tuple[str | int, ...]) -> None:
        if isinstance(value, timedelta) and value > MAX_DURATION:
            problems.append(
                {
                    "loc": list(where),
                    "msg": f"at most {MAX_DURATION.days} days (P{MAX_DURATION.days}D), "
                    f"not {value.days} days",
                }
            )
        elif isinstance(value, BaseModel):
            for name, info in type(value).model_fields.items():
                visit(getattr(value, name), (*where, info.alias or name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, (*where, index))

    visit(model, loc)
    return problems


# --- the compiled program -------------------------------------------------------------


class Op(BaseModel):
    """One instruction. ``path`` names the step it came from, e.g. "2", "3.then.0",
    "4.b1.0": stable for a version, and part of every message key."""

    kind: Literal["send", "wait", "wait_until", "branch", "split", "jump"]
    path: str
    send: Send | None = None
    wait: timedelta | None = None
    wait_until: time | None = None
    condition: Any = None
    # branch: where "else" starts; jump: where to go
    target: int | None = None
    # split: (weight, start, name) per variant
    variants: list[tuple[int, int, str]] = Field(default_factory=list)


def compile_steps(steps: list[Any], prefix: str = "") -> list[Op]:
    program: list[Op] = []
    _emit(steps, prefix, program)
    return program


def _emit(steps: list[Any], prefix: str, program: list[Op]) -> None:
    for index, step in enumerate(steps):
        path = f"{prefix}{index}"
        if isinstance(step, WaitStep):
            program.append(Op(kind="wait", path=path, wait=step.wait))
        elif isinstance(step, WaitUntilStep):
            program.append(Op(kind="wait_until", path=path, wait_until=step.wait_until))
        elif isinstance(step, SendStep):
            program.append(Op(kind="send", path=path, send=step.send))
        elif isinstance(step, BranchStep):
            at = len(program)
            program.append(Op(kind="branch", path=path, condition=step.branch.if_))
            _emit(step.branch.then, f"{path}.then.", program)
            jump_at = len(program)
            program.append(Op(kind="jump", path=f"{path}.end"))
            program[at].target = len(program)
            _emit(step.branch.else_, f"{path}.else.", program)
            program[jump_at].target = len(program)
        elif isinstance(step, SplitStep):
            at = len(program)
            program.append(Op(kind="split", path=path))
            jumps: list[int] = []
            variants: list[tuple[int, int, str]] = []
            for number, variant in enumerate(step.split):
                name = variant.name or f"v{number + 1}"
                variants.append((variant.weight, len(program), name))
                _emit(variant.steps, f"{path}.{name}.", program)
                jumps.append(len(program))
                program.append(Op(kind="jump", path=f"{path}.{name}.end"))
            for jump in jumps:
                program[jump].target = len(program)
            program[at].variants = variants


def send_steps(steps: list[Any]) -> list[tuple[str, Send]]:
    """Every send step with its path, in every branch and variant: what a preview shows."""
    return [(op.path, op.send) for op in compile_steps(steps) if op.send is not None]
