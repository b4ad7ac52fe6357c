"""Templates (marketers): list, read, replace per channel and locale, preview, revert.

A template is checked when it is saved — syntax, variables it will never be given, and a
trial render in the sandbox with sample data — so a broken one is a 422 naming the line,
never a broken message in a customer's inbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field, model_validator

from api.deps import SessionDep, require
from api.errors import documented
from contracts.errors import NotFound, Unprocessable
from contracts.fields import LocaleTag
from contracts.messages import CHANNELS, Channel, Kind
from db.models import TemplateOverride
from services.platform import audit
from services.platform.api_keys import Principal
from services.templating import overrides
from services.templating.catalogue import BASE_CONTEXT, PARTS
from services.templating.renderer import Renderer, TemplateError
from services.templating.samples import SAMPLES, sample_context

router = APIRouter(prefix="/v1/templates", tags=["templates"])
Reader = Annotated[Principal, Depends(require("rules:read"))]
Writer = Annotated[Principal, Depends(require("rules:write"))]
TemplateName = Annotated[
    str, Path(pattern=r"^[a-z][a-z0-9_]{0,99}$", description="snake_case, e.g. cart_reminder_1")
]
ContextName = Literal["cart", "coupon", "order", "product", "recommendations"]


class EmailContent(BaseModel):
    subject: str = Field(min_length=1, max_length=1000)
    html: str = Field(min_length=1, max_length=200_000)
    text: str = Field(min_length=1, max_length=100_000)


class SmsContent(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    dlt_template_id: str | None = Field(default=None, pattern=r"^\d{10,25}$")


class WhatsappContent(BaseModel):
    text: str | None = Field(default=None, min_length=1, max_length=4096)
    content_sid: str | None = Field(
        default=None,
        pattern=r"^HX[0-9a-fA-F]{32}$",
        description="An approved Twilio Content template, for sends outside the 24-hour window",
    )
    variables: dict[str, str] | None = Field(
        default=None, description='Its placeholders: {"1": "{{ customer.first_name }}"}'
    )

    @model_validator(mode="after")
    def _something(self) -> WhatsappContent:
        if not self.text and not self.content_sid:
            raise ValueError("give text, content_sid, or both")
        if self.variables and not self.content_sid:
            raise ValueError("variables belong to a content_sid")
        return self


class ChannelsIn(BaseModel):
    email: dict[LocaleTag, EmailContent] | None = None
    sms: dict[LocaleTag, SmsContent] | None = None
    whatsapp: dict[LocaleTag, WhatsappContent] | None = None


class TemplatePut(BaseModel):
    kind: Kind | None = Field(default=None, description="Required for a new template")
    context: list[ContextName] | None = Field(
        default=None, description="Variables beyond the base ones; required for a new template"
    )
    channels: ChannelsIn


class Variant(BaseModel):
    channel: Channel
    locale: str
    source: Literal["default", "custom"]
    content: dict[str, Any] | None = None
    version: int | None = None
    updated_at: datetime | None = None


class TemplateOut(BaseModel):
    name: str
    kind: Kind
    description: str
    variables: list[str]
    variants: list[Variant]


class PreviewIn(BaseModel):
    channel: Channel
    locale: str = "en"
    context: dict[str, Any] | None = Field(
        default=None, description="Overrides of the sample data, e.g. a real cart"
    )


class PreviewOut(BaseModel):
    channel: Channel
    locale: str
    subject: str | None
    text: str
    html: str | None


def _renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


async def _describe(session: Any, renderer: Renderer, name: str) -> TemplateOut | None:
    entry = renderer.entry(name)
    stored = await overrides.of_template(session, name)
    if entry is None and not stored:
        return None
    variants: dict[tuple[str, str], Variant] = {}
    for channel in CHANNELS:
        for locale in renderer.default_locales(name, channel):
            variants[(channel, locale)] = Variant(channel=channel, locale=locale, source="default")
    for row in stored:
        variants[(row.channel, row.locale)] = Variant(
            channel=row.channel,
            locale=row.locale,
            source="custom",
            content=row.content,
            version=row.version,
            updated_at=row.updated_at,
        )
    kind = entry.kind if entry else stored[0].kind
    context = entry.context if entry else tuple(stored[0].context)
    return TemplateOut(
        name=name,
        kind=kind,
        description=entry.description if entry else "",
        variables=sorted({*BASE_CONTEXT, *context}),
        variants=[variants[k] for k in sorted(variants)],
    )


@router.get("", summary="Every template: shipped defaults and stored versions")
async def list_templates(request: Request, session: SessionDep, _: Reader) -> list[TemplateOut]:
    renderer = _renderer(request)
    names = set(renderer.catalog) | await overrides.names(session)
    out = []
    for name in sorted(names):
        described = await _describe(session, renderer, name)
        if described is not None:
            out.append(described)
    return out


@router.get("/{name}", responses=documented(401, 403, 404))
async def get_template(
    name: TemplateName, request: Request, session: SessionDep, _: Reader
) -> TemplateOut:
    described = await _describe(session, _renderer(request), name)
    if described is None:
        raise NotFound(f"no template {name!r}")
    return described


@router.put(
    "/{name}",
    summary="Store a template's version for some channels and locales",
    responses=documented(401, 403, 422),
)
async def put_template(
    name: TemplateName,
    body: TemplatePut,
    request: Request,
    session: SessionDep,
    principal: Writer,
) -> TemplateOut:
    renderer = _renderer(request)
    entry = renderer.entry(name)
    existing = await overrides.any_of(session, name)
    kind, context = _kind_and_context(name, body, entry, existing)
    problems: list[dict[str, Any]] = []
    contents: list[tuple[Channel, str, dict[str, Any]]] = []
    allowed = frozenset(BASE_CONTEXT) | frozenset(context)
    samples = sample_context(tuple(context))
    for channel in CHANNELS:
        by_locale = getattr(body.channels, channel) or {}
        for locale, content in by_locale.items():
            data = content.model_dump(exclude_none=True)
            problems += _check(renderer, name, channel, locale, data, allowed, samples)
            contents.append((channel, locale, data))
    if not contents:
        raise Unprocessable(
            "channels: give at least one channel and locale",
            fields=[{"loc": ["body", "channels"], "msg": "give at least one channel and locale"}],
        )
    if problems:
        first = problems[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        raise Unprocessable(f"{where}: {first['msg']}", fields=problems)
    await overrides.store(session, name, kind, context, contents, principal.key_id)
    audit.record(session, principal, "template", name, "put", _variants(kind, contents))
    await session.flush()
    described = await _describe(session, renderer, name)
    assert described is not None
    return described


def _variants(kind: str, contents: list[tuple[Channel, str, dict[str, Any]]]) -> dict[str, Any]:
    return {"kind": kind, "channels": sorted(f"{c}/{locale}" for c, locale, _ in contents)}


def _kind_and_context(
    name: str, body: TemplatePut, entry: Any, existing: TemplateOverride | None
) -> tuple[str, tuple[str, ...]]:
    if entry is not None:
        if body.kind is not None and body.kind != entry.kind:
            raise Unprocessable(
                f"kind: {name} is a {entry.kind} template and stays one",
                fields=[{"loc": ["body", "kind"], "msg": f"{name} is {entry.kind}"}],
            )
        return entry.kind, tuple(entry.context)
    if existing is not None:
        return body.kind or existing.kind, tuple(body.context or existing.context)
    missing = [f for f in ("kind", "context") if getattr(body, f) is None]
    if missing:
        raise Unprocessable(
            f"{missing[0]}: required for a new template",
            fields=[{"loc": ["body", f], "msg": "required for a new template"} for f in missing],
        )
    assert body.kind is not None
    assert body.context is not None
    return body.kind, tuple(body.context)


def _check(
    renderer: Renderer,
    name: str,
    channel: Channel,
    locale: str,
    data: dict[str, Any],
    allowed: frozenset[str],
    samples: dict[str, Any],
) -> list[dict[str, Any]]:
    problems = []
    sources = {part: data[part] for part in PARTS[channel] if part in data}
    sources.update({f"variables.{k}": v for k, v in (data.get("variables") or {}).items()})
    for part, source in sources.items():
        try:
            renderer.check_source(source, allowed, where=part)
        except TemplateError as exc:
            problems.append(_problem(channel, locale, part, exc))
    if problems:
        return problems
    try:
        renderer.render(name, channel, locale, samples, overrides={locale: data})
    except TemplateError as exc:
        part = (exc.where or "").rsplit(".", 1)[-1] if exc.where else "text"
        problems.append(_problem(channel, locale, part, exc))
    return problems


def _problem(channel: str, locale: str, part: str, exc: TemplateError) -> dict[str, Any]:
    where = f"line {exc.line}: " if exc.line else ""
    return {
        "loc": ["body", "channels", channel, locale, *part.split(".")],
        "msg": where + exc.message,
    }


@router.delete(
    "/{name}",
    summary="Drop the stored versions: the shipped defaults apply again",
    responses=documented(401, 403, 404),
)
async def revert_template(
    name: TemplateName, request: Request, session: SessionDep, principal: Writer
) -> TemplateOut:
    if not await overrides.delete_all(session, name):
        raise NotFound(f"template {name!r} has no stored version")
    audit.record(session, principal, "template", name, "delete")
    described = await _describe(session, _renderer(request), name)
    if described is None:
        raise NotFound(f"template {name!r} is gone: it had no shipped default")
    return described


@router.post(
    "/{name}/preview",
    summary="Render for one channel and locale with sample data, sending nothing",
    responses=documented(401, 403, 404, 422),
)
async def preview_template(
    name: TemplateName, body: PreviewIn, request: Request, session: SessionDep, _: Reader
) -> PreviewOut:
    renderer = _renderer(request)
    described = await _describe(session, renderer, name)
    if described is None:
        raise NotFound(f"no template {name!r}")
    context = {k: v for k, v in SAMPLES.items() if k in described.variables}
    context.update(body.context or {})
    stored = await overrides.for_render(session, name, body.channel, body.locale)
    try:
        rendered = renderer.render(name, body.channel, body.locale, context, stored)
    except TemplateError as exc:
        raise Unprocessable(
            str(exc), fields=[{"loc": ["body", "context"], "msg": str(exc)}]
        ) from exc
    return PreviewOut(
        channel=body.channel,
        locale=rendered.locale,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )
