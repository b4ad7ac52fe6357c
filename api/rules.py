"""Rules (marketers): create, version, activate, pause, preview, test."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, TemporalDep, require
from api.errors import documented
from contracts.errors import Unprocessable
from contracts.rules import MAX_DURATION, RuleDefinition, send_steps
from db.models import Rule
from services.journeys import rules, test_runs
from services.platform.api_keys import Principal
from services.templating.renderer import Renderer, TemplateError
from services.templating.samples import SAMPLES

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
    return RuleOut(
        id=rule.id,
        status=rule.status,
        version=rule.version,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
        definition=version.definition,
        versions=await rules.version_numbers(session, rule.id),
    )


def _renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a rule (as a draft)",
    responses=documented(401, 403, 422),
)
async def create_rule(
    body: RuleDefinition, request: Request, session: SessionDep, principal: Writer
) -> RuleOut:
    await rules.check_definition(session, _renderer(request), body)
    rule, _ = await rules.create(session, body, _actor(principal))
    return await _out(session, rule)


@router.get("", summary="Every rule, with its current version")
async def list_rules(session: SessionDep, _: Reader) -> list[RuleOut]:
    return [await _out(session, rule) for rule in await rules.list_rules(session)]


@router.get("/{rule_id}", responses=documented(401, 403, 404))
async def get_rule(rule_id: str, session: SessionDep, _: Reader) -> RuleOut:
    return await _out(session, await rules.get(session, rule_id))


@router.get("/{rule_id}/versions/{version}", responses=documented(401, 403, 404))
async def get_rule_version(
    rule_id: str,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],  # int4 column: beyond is a 422, not 500
    session: SessionDep,
    _: Reader,
) -> dict[str, Any]:
    row = await rules.version_of(session, rule_id, version)
    return {"id": rule_id, "version": version, "definition": row.definition}


@router.get("/{rule_id}/audit", summary="Who changed what, when", responses=documented(404))
async def rule_audit(rule_id: str, session: SessionDep, _: Reader) -> list[AuditOut]:
    await rules.get(session, rule_id)
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
    await rules.check_definition(session, _renderer(request), body)
    rule, _ = await rules.update(session, rule_id, body, _actor(principal))
    return await _out(session, rule)


async def _transition(
    session: Any, rule_id: str, to: str, principal: Principal, **details: Any
) -> Rule:
    return await rules.transition(session, rule_id, to, _actor(principal), **details)


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
        await rules.end_running_journeys(session, rule_id)
    return await _out(session, rule)


@router.post("/{rule_id}/archive", responses=documented(401, 403, 404, 409))
async def archive_rule(rule_id: str, session: SessionDep, principal: Writer) -> RuleOut:
    rule = await _transition(session, rule_id, "archived", principal)
    await rules.end_running_journeys(session, rule_id)
    return await _out(session, rule)


@router.post(
    "/{rule_id}/preview",
    summary="Render every send step for a sample customer and cart, sending nothing",
    responses=documented(401, 403, 404, 422),
)
async def preview_rule(
    rule_id: str, request: Request, session: SessionDep, _: Reader, body: PreviewIn | None = None
) -> list[PreviewStep]:
    body = body or PreviewIn()
    rule = await rules.get(session, rule_id)
    version = await rules.version_of(session, rule_id, rule.version)
    definition = RuleDefinition.model_validate(version.definition)
    renderer = _renderer(request)
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
    run = await test_runs.start(
        session,
        temporal,
        settings,
        rule_id=rule_id,
        customer_id=body.customer_id,
        speed=body.speed,
    )
    return TestOut(workflow_id=run.workflow_id, cart_id=run.cart_id)
