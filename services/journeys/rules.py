"""Rules: create, version, activate, pause, archive, and the audit trail of every change.

Every edit is a new version; a journey pins the version it entered with
(services/journeys/admission.py), so editing a rule never changes a running journey's steps.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import search_attributes as sa
from contracts.errors import Conflict, NotFound, Unprocessable
from contracts.journeys import RulePaused
from contracts.names import RULE_PAUSED_SIGNAL
from contracts.rules import RuleDefinition, durations_too_long, send_steps
from db.models import Rule, RuleAudit, RuleVersion
from services.delivery import outbox
from services.journeys.defaults import (
    DEFAULT_ABANDONED_CART,
    DEFAULT_ABANDONED_CART_SLUG,
    LIFECYCLE_DEFAULTS,
)
from services.templating import overrides
from services.templating.renderer import Renderer

# draft -> active <-> paused ; any -> archived (for good)
TRANSITIONS: dict[str, set[str]] = {
    "draft": {"active", "archived"},
    "active": {"paused", "archived"},
    "paused": {"active", "archived"},
    "archived": set(),
}


@dataclass(frozen=True)
class Actor:
    key_id: uuid.UUID | None
    name: str | None


def new_rule_id() -> str:
    return "rule_" + secrets.token_hex(6)


async def template_problems(
    session: AsyncSession, renderer: Renderer, definition: RuleDefinition
) -> list[dict[str, Any]]:
    """Send steps naming a template that does not exist: 422 material."""
    stored = await overrides.names(session)
    problems = []
    for path, send in send_steps(definition.steps):
        if send.template not in renderer.catalog and send.template not in stored:
            problems.append(
                {
                    "loc": ["body", "steps", *_path_loc(path), "send", "template"],
                    "msg": f"unknown template {send.template!r}",
                }
            )
    return problems


def _path_loc(path: str) -> list[Any]:
    loc: list[Any] = []
    for part in path.split("."):
        loc.append(int(part) if part.isdigit() else part)
    return loc


async def check_definition(
    session: AsyncSession, renderer: Renderer, definition: RuleDefinition
) -> None:
    """Refuse (422) a definition whose waits run past the calendar or whose send steps name
    templates that do not exist: things pydantic cannot see from the body alone."""
    too_long = durations_too_long(definition)
    if too_long:
        where = ".".join(str(p) for p in too_long[0]["loc"])
        raise Unprocessable(f"{where}: {too_long[0]['msg']}", fields=too_long)
    problems = await template_problems(session, renderer, definition)
    if problems:
        where = ".".join(str(p) for p in problems[0]["loc"][1:])
        raise Unprocessable(f"{where}: {problems[0]['msg']}", fields=problems)


async def _audit(
    session: AsyncSession, rule: Rule, action: str, actor: Actor, **details: Any
) -> None:
    session.add(
        RuleAudit(
            rule_id=rule.id,
            action=action,
            version=rule.version,
            actor=actor.name,
            actor_key_id=actor.key_id,
            details=details,
        )
    )


async def create(
    session: AsyncSession,
    definition: RuleDefinition,
    actor: Actor,
    *,
    slug: str | None = None,
    status: str = "draft",
) -> tuple[Rule, RuleVersion]:
    rule = Rule(
        id=new_rule_id(),
        slug=slug,
        name=definition.name,
        trigger_event=definition.trigger.event,
        status=status,
        version=1,
        priority=definition.priority,
    )
    version = RuleVersion(
        rule_id=rule.id,
        version=1,
        definition=definition.model_dump(mode="json", by_alias=True),
        created_by=actor.key_id,
    )
    session.add(rule)
    await session.flush()
    session.add(version)
    await _audit(session, rule, "created", actor)
    if status != "draft":
        await _audit(session, rule, status, actor)
    await session.flush()
    await session.refresh(rule)
    return rule, version


async def get(session: AsyncSession, rule_id: str, *, lock: bool = False) -> Rule:
    rule = await session.get(Rule, rule_id, with_for_update=lock)
    if rule is None:
        raise NotFound(f"no rule {rule_id!r}")
    return rule


async def version_of(session: AsyncSession, rule_id: str, version: int) -> RuleVersion:
    row = await session.get(RuleVersion, (rule_id, version))
    if row is None:
        raise NotFound(f"rule {rule_id!r} has no version {version}")
    return row


async def update(
    session: AsyncSession, rule_id: str, definition: RuleDefinition, actor: Actor
) -> tuple[Rule, RuleVersion]:
    rule = await get(session, rule_id, lock=True)
    if rule.status == "archived":
        raise Conflict("an archived rule cannot be changed; create a new one")
    rule.version += 1
    rule.name = definition.name
    rule.trigger_event = definition.trigger.event
    rule.priority = definition.priority
    version = RuleVersion(
        rule_id=rule.id,
        version=rule.version,
        definition=definition.model_dump(mode="json", by_alias=True),
        created_by=actor.key_id,
    )
    session.add(version)
    await _audit(session, rule, "updated", actor)
    await session.flush()
    await session.refresh(rule)  # updated_at is the database's
    return rule, version


async def transition(
    session: AsyncSession, rule_id: str, to: str, actor: Actor, **details: Any
) -> Rule:
    rule = await get(session, rule_id, lock=True)
    if to == rule.status:
        return rule  # activating an active rule is a retry, not an error
    if to not in TRANSITIONS[rule.status]:
        raise Conflict(f"a {rule.status} rule cannot become {to}")
    rule.status = to
    await _audit(session, rule, to, actor, **details)
    await session.flush()
    await session.refresh(rule)  # updated_at is the database's
    return rule


async def audit_trail(session: AsyncSession, rule_id: str) -> list[RuleAudit]:
    return list(
        await session.scalars(
            select(RuleAudit).where(RuleAudit.rule_id == rule_id).order_by(RuleAudit.id)
        )
    )


async def list_rules(session: AsyncSession) -> list[Rule]:
    return list(await session.scalars(select(Rule).order_by(Rule.created_at, Rule.id)))


async def version_numbers(session: AsyncSession, rule_id: str) -> list[int]:
    return list(
        await session.scalars(
            select(RuleVersion.version)
            .where(RuleVersion.rule_id == rule_id)
            .order_by(RuleVersion.version)
        )
    )


async def end_running_journeys(session: AsyncSession, rule_id: str) -> None:
    """Tell every running journey of the rule to stop, through the dispatcher's outbox."""
    outbox.add_signal(
        session,
        origin="rule",
        workflow_id=f"rule:{rule_id}",
        signal_name=RULE_PAUSED_SIGNAL,
        payload=RulePaused(rule_id=rule_id).model_dump(mode="json"),
        target_query=sa.equals(sa.RULE_ID, rule_id),
    )
    await session.flush()
    await outbox.notify(session)


async def ensure_default_rules(session: AsyncSession) -> Rule | None:
    """Install the rules Sutra ships (services/journeys/defaults.py), each once by its slug:
    the abandoned-cart rule, active, and the lifecycle journeys (welcome, post-purchase,
    replenishment, win-back, birthday, purchase anniversary, back in stock, price drop) as
    drafts for a marketer to review and activate. A rule installed before is never
    installed again, even if a marketer since edited, paused or archived it.

    Returns the abandoned-cart rule when this call installed it, else None."""
    actor = Actor(key_id=None, name="sutra (default rules)")
    installed = set(
        await session.scalars(
            select(Rule.slug).where(
                Rule.slug.in_([DEFAULT_ABANDONED_CART_SLUG, *LIFECYCLE_DEFAULTS])
            )
        )
    )
    abandoned_cart = None
    if DEFAULT_ABANDONED_CART_SLUG not in installed:
        abandoned_cart, _ = await create(
            session,
            RuleDefinition.model_validate(DEFAULT_ABANDONED_CART),
            actor,
            slug=DEFAULT_ABANDONED_CART_SLUG,
            status="active",
        )
    for slug, definition in LIFECYCLE_DEFAULTS.items():
        if slug not in installed:
            rule, _ = await create(
                session, RuleDefinition.model_validate(definition), actor, slug=slug, status="draft"
            )
            # One transaction gives every rule the same now(): list them in install order,
            # the abandoned-cart rule first (README's tour takes the first rule).
            await session.execute(
                sql_update(Rule)
                .where(Rule.id == rule.id)
                .values(created_at=func.clock_timestamp())
                .execution_options(synchronize_session=False)
            )
    return abandoned_cart
