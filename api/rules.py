"""Rules (marketers): create, version, activate, pause, preview, test."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from api.deps import SessionDep, SettingsDep, TemporalDep, require
from api.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable, documented
from contracts import search_attributes as sa
from contracts.carts import CartEvent, CartItem, CartSnapshot, StartCartInput
from contracts.journeys import RulePaused
from contracts.lifecycle import LifecycleInput
from contracts.names import LIFECYCLE_WORKFLOW, RULE_PAUSED_SIGNAL
from contracts.rules import MAX_DURATION, RuleDefinition, durations_too_long, send_steps
from db.models import Customer, EventRoute, Rule, RuleVersion
from services.intake.service import ROUTES_CHANNEL
from services.journeys import rules
from services.platform.api_keys import Principal
from services.templating.templates import SAMPLES, Renderer, TemplateError

router = APIRouter(prefix="/v1/rules", tags=["rules"])
Reader = Annotated[Principal, Depends(require("rules:read"))]
Writer = Annotated[Principal, Depends(require("rules:write"))]


class RuleOut(BaseModel):
    id: str
    status: str
    version: int
    created_at: datetime
    updated_at: datetime
    definition: dict[str, Any]
    versions: list[int]


class AuditOut(BaseModel):
    action: str
    version: int
    actor: str | None
    actor_key_id: uuid.UUID | None
    details: dict[str, Any]
    at: datetime


class PauseIn(BaseModel):
    running: Literal["drain", "end"] = Field(
        default="drain",
        description="drain: running journeys finish; end: running journeys stop at once",
    )


class PreviewIn(BaseModel):
    locale: str = "en"
    cart: dict[str, Any] | None = Field(default=None, description="Overrides the sample cart")
    customer: dict[str, Any] | None = Field(default=None, description="Overrides the sample")


class PreviewMessage(BaseModel):
    channel: str
    locale: str
    subject: str | None
    text: str
    html: str | None


class PreviewStep(BaseModel):
    step: str
    template: str
    incentive: dict[str, Any] | None
    messages: list[PreviewMessage]


class TestIn(BaseModel):
    customer_id: str = Field(description="A customer Sutra knows: the test messages go to them")
    speed: float = Field(
        default=60.0, ge=1, le=100_000, description="Waits are divided by this (60: hours→min)"
    )


class TestOut(BaseModel):
    workflow_id: str
    cart_id: str | None = Field(default=None, description="The test cart (cart.abandoned rules)")


def _actor(principal: Principal) -> rules.Actor:
    return rules.Actor(key_id=principal.key_id, name=principal.name)


async def _out(session: Any, rule: Rule) -> RuleOut:
    version = await rules.version_of(session, rule.id, rule.version)
    versions = list(
        await session.scalars(
            select(RuleVersion.version)
            .where(RuleVersion.rule_id == rule.id)
            .order_by(RuleVersion.version)
        )
    )
    return RuleOut(
        id=rule.id,
        status=rule.status,
        version=rule.version,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
        definition=version.definition,
        versions=versions,
    )


def _rule_error(exc: rules.RuleError) -> Exception:
    if exc.status == 404:
        return NotFound(exc.message)
    return Conflict(exc.message)


async def _check_definition(request: Request, session: Any, definition: RuleDefinition) -> None:
    too_long = durations_too_long(definition)
    if too_long:
        where = ".".join(str(p) for p in too_long[0]["loc"])
        raise Unprocessable(f"{where}: {too_long[0]['msg']}", fields=too_long)
    renderer: Renderer = request.app.state.renderer
    problems = await rules.template_problems(session, renderer, definition)
    if problems:
        where = ".".join(str(p) for p in problems[0]["loc"][1:])
        raise Unprocessable(f"{where}: {problems[0]['msg']}", fields=problems)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a rule (as a draft)",
    responses=documented(401, 403, 422),
)
async def create_rule(
    body: RuleDefinition, request: Request, session: SessionDep, principal: Writer
) -> RuleOut:
    await _check_definition(request, session, body)
    rule, _ = await rules.create(session, body, _actor(principal))
    return await _out(session, rule)


@router.get("", summary="Every rule, with its current version")
async def list_rules(session: SessionDep, _: Reader) -> list[RuleOut]:
    return [await _out(session, rule) for rule in await rules.list_rules(session)]


@router.get("/{rule_id}", responses=documented(401, 403, 404))
async def get_rule(rule_id: str, session: SessionDep, _: Reader) -> RuleOut:
    try:
        return await _out(session, await rules.get(session, rule_id))
    except rules.RuleError as exc:
        raise _rule_error(exc) from exc


@router.get("/{rule_id}/versions/{version}", responses=documented(401, 403, 404))
async def get_rule_version(
    rule_id: str,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],  # int4 column: beyond is a 422, not 500
    session: SessionDep,
    _: Reader,
) -> dict[str, Any]:
    try:
        row = await rules.version_of(session, rule_id, version)
    except rules.RuleError as exc:
        raise _rule_error(exc) from exc
    return {"id": rule_id, "version": version, "definition": row.definition}


@router.get("/{rule_id}/audit", summary="Who changed what, when", responses=documented(404))
async def rule_audit(rule_id: str, session: SessionDep, _: Reader) -> list[AuditOut]:
    try:
        await rules.get(session, rule_id)
    except rules.RuleError as exc:
        raise _rule_error(exc) from exc
    return [
        AuditOut.model_validate(a, from_attributes=True)
        for a in await rules.audit_trail(session, rule_id)
    ]


@router.put(
    "/{rule_id}",
    summary="Publish a new version; running journeys finish on the version they entered",
    responses=documented(401, 403, 404, 409, 422),
)
async def update_rule(
    rule_id: str, body: RuleDefinition, request: Request, session: SessionDep, principal: Writer
) -> RuleOut:
    await _check_definition(request, session, body)
    try:
        rule, _ = await rules.update(session, rule_id, body, _actor(principal))
    except rules.RuleError as exc:
        raise _rule_error(exc) from exc
    return await _out(session, rule)


async def _transition(
    session: Any, rule_id: str, to: str, principal: Principal, **details: Any
) -> Rule:
    try:
        return await rules.transition(session, rule_id, to, _actor(principal), **details)
    except rules.RuleError as exc:
        raise _rule_error(exc) from exc


@router.post("/{rule_id}/activate", responses=documented(401, 403, 404, 409))
async def activate_rule(rule_id: str, session: SessionDep, principal: Writer) -> RuleOut:
    return await _out(session, await _transition(session, rule_id, "active", principal))


@router.post(
    "/{rule_id}/pause",
    summary="Stop new entries; running journeys drain or end",
    responses=documented(401, 403, 404, 409),
)
async def pause_rule(
    rule_id: str, session: SessionDep, principal: Writer, body: PauseIn | None = None
) -> RuleOut:
    running = (body or PauseIn()).running
    rule = await _transition(session, rule_id, "paused", principal, running=running)
    if running == "end":
        await _end_running_journeys(session, rule_id)
    return await _out(session, rule)


@router.post("/{rule_id}/archive", responses=documented(401, 403, 404, 409))
async def archive_rule(rule_id: str, session: SessionDep, principal: Writer) -> RuleOut:
    rule = await _transition(session, rule_id, "archived", principal)
    await _end_running_journeys(session, rule_id)
    return await _out(session, rule)


async def _end_running_journeys(session: Any, rule_id: str) -> None:
    """Tell every running journey of the rule to stop, through the dispatcher's outbox."""
    session.add(
        EventRoute(
            event_id=None,
            origin="rule",
            workflow_id=f"rule:{rule_id}",
            workflow_type="",
            kind="signal_query",
            signal_name=RULE_PAUSED_SIGNAL,
            signal_payload=RulePaused(rule_id=rule_id).model_dump(mode="json"),
            target_query=sa.equals(sa.RULE_ID, rule_id),
        )
    )
    await session.flush()
    await session.execute(select(func.pg_notify(ROUTES_CHANNEL, "")))


@router.post(
    "/{rule_id}/preview",
    summary="Render every send step for a sample customer and cart, sending nothing",
    responses=documented(401, 403, 404, 422),
)
async def preview_rule(
    rule_id: str, request: Request, session: SessionDep, _: Reader, body: PreviewIn | None = None
) -> list[PreviewStep]:
    body = body or PreviewIn()
    try:
        rule = await rules.get(session, rule_id)
        version = await rules.version_of(session, rule_id, rule.version)
    except rules.RuleError as exc:
        raise _rule_error(exc) from exc
    definition = RuleDefinition.model_validate(version.definition)
    renderer: Renderer = request.app.state.renderer
    steps = []
    for path, send in send_steps(definition.steps):
        context: dict[str, Any] = {
            k: v for k, v in SAMPLES.items() if k in renderer_vars(renderer, send.template)
        }
        context["customer"] = {**SAMPLES["customer"], **(body.customer or {})}
        if body.cart is not None:
            context["cart"] = {**SAMPLES["cart"], **body.cart}
        if send.incentive is not None:
            # A rule stored before durations were bounded may point past year 9999.
            expires = datetime.now(UTC) + min(send.incentive.expires_in, MAX_DURATION)
            context["coupon"] = {
                "code": "PREVIEW-CODE",
                "percent_off": send.incentive.percent_off,
                "expires_at": expires.isoformat(),
            }
        messages = []
        for channel in send.channels:
            try:
                out = renderer.render(send.template, channel, body.locale, context)
            except TemplateError as exc:
                raise Unprocessable(
                    str(exc), fields=[{"loc": ["steps", path], "msg": str(exc)}]
                ) from exc
            messages.append(
                PreviewMessage(
                    channel=channel,
                    locale=out.locale,
                    subject=out.subject,
                    text=out.text,
                    html=out.html,
                )
            )
        steps.append(
            PreviewStep(
                step=path,
                template=send.template,
                incentive=send.incentive.model_dump(mode="json") if send.incentive else None,
                messages=messages,
            )
        )
    return steps


def renderer_vars(renderer: Renderer, template: str) -> frozenset[str]:
    entry = renderer.entry(template)
    return entry.allowed_variables if entry else frozenset(SAMPLES)


@router.post(
    "/{rule_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run the rule now for a named test customer, waits shortened by `speed`",
    responses=documented(401, 403, 404, 409, 503),
)
async def start_test_run(
    rule_id: str,
    body: TestIn,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    _: Writer,
) -> TestOut:
    try:
        rule = await rules.get(session, rule_id)
    except rules.RuleError as exc:
        raise _rule_error(exc) from exc
    if rule.status == "archived":
        raise Conflict("an archived rule cannot be tested")
    if await session.get(Customer, body.customer_id) is None:
        raise NotFound(f"no customer {body.customer_id!r}: send an event for them first")
    if rule.trigger_event != "cart.abandoned":
        return await _start_lifecycle_test(rule, body, settings, temporal)
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
        customer_id=body.customer_id,
        idle_after=definition.trigger.idle_after,
        expire_after=settings.cart_expire_after,
        test_rule=rule_id,
        time_scale=body.speed,
    )
    signal = CartEvent(
        event_id=f"test-{cart_id}",
        type="cart.updated",
        occurred_at=now,
        customer_id=body.customer_id,
        snapshot=snapshot,
    )
    workflow_id = f"cart/{cart_id}"
    try:
        await temporal.start_workflow(
            "CartWorkflow",
            start,
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
            start_signal="event",
            start_signal_args=[signal],
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.CUSTOMER_ID, body.customer_id),
                    SearchAttributePair(sa.CART_ID, cart_id),
                ]
            ),
            static_summary=f"Test run of rule {rule_id} for customer {body.customer_id}",
            rpc_timeout=timedelta(seconds=5),
        )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not start the test run: {exc.message}") from exc
    return TestOut(workflow_id=workflow_id, cart_id=cart_id)


def _sample_trigger_context(trigger: str) -> tuple[dict[str, Any], str | None]:
    """What a journey of this trigger is started with, from the preview samples."""
    if trigger in ("order.placed", "order.delivered"):
        return {"order": SAMPLES["order"]}, None
    if trigger in ("product.back_in_stock", "product.price_dropped", "back_in_stock.subscribed"):
        return {"product": SAMPLES["product"]}, None
    if trigger == "replenishment_due":
        return {"product": SAMPLES["product"]}, SAMPLES["product"]["sku"]
    return {}, None


async def _start_lifecycle_test(rule: Rule, body: TestIn, settings: Any, temporal: Any) -> TestOut:
    context, sku = _sample_trigger_context(rule.trigger_event)
    journey = LifecycleInput(
        rule_id=rule.id,
        customer_id=body.customer_id,
        key=f"test-{uuid.uuid4().hex[:10]}",
        trigger=rule.trigger_event,
        context=context,
        triggered_at=datetime.now(UTC),
        sku=sku,
        time_scale=body.speed,
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
                    SearchAttributePair(sa.CUSTOMER_ID, body.customer_id),
                    SearchAttributePair(sa.RULE_ID, rule.id),
                ]
            ),
            static_summary=f"Test run of rule {rule.id} for customer {body.customer_id}",
            rpc_timeout=timedelta(seconds=5),
        )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not start the test run: {exc.message}") from exc
    return TestOut(workflow_id=journey.workflow_id)
