"""The audit log: one place listing every change to rules, templates, API keys, orders,
customers and the attribution model — who (API key name and id), when, what.

Entries are added to the caller's session, so they commit (or roll back) with the change
they describe: a refused or failed request leaves none.

Rules keep their own trail in ``rule_audit`` (services/journeys/rules.py); every ``RuleAudit`` row
a session flushes is mirrored here by a ``before_flush`` hook, so rule changes appear in
both without each caller remembering to write twice, and a retried no-op (activating an
active rule) appears in neither.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import event, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from contracts.errors import BadRequest
from db.models import AuditEntry, RuleAudit

Entity = Literal[
    "rule",
    "template",
    "api_key",
    "order",
    "customer",
    "event",
    "attribution_model",
    "journey",
    "message",
]
ENTITIES: tuple[str, ...] = (
    "rule",
    "template",
    "api_key",
    "order",
    "customer",
    "event",
    "attribution_model",
    "journey",
    "message",
)


class Actor(Protocol):
    """An API principal (services.platform.api_keys.Principal) or anything naming a key."""

    @property
    def key_id(self) -> uuid.UUID | None: ...

    @property
    def name(self) -> str | None: ...


def _jsonable(details: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(details or {}, default=str))
    return out


def record(
    session: AsyncSession | Session,
    actor: Actor | None,
    entity: Entity,
    entity_id: object,
    action: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one entry to the session; it is written when the session flushes."""
    session.add(
        AuditEntry(
            actor=actor.name if actor is not None else None,
            actor_key_id=actor.key_id if actor is not None else None,
            entity=entity,
            entity_id=str(entity_id),
            action=action,
            details=_jsonable(details),
        )
    )


def order_transition(state: Any, request: Any) -> dict[str, Any]:
    """What an ops transition changed: the status before and after, and what ops gave."""
    history = list(getattr(state, "history", None) or [])
    before = history[-2].status if len(history) >= 2 else None
    asked = request.model_dump(exclude_none=True, exclude={"by"}, mode="json")
    status = getattr(state.status, "value", state.status)
    return {"from": getattr(before, "value", before), "status": status, **asked}


@event.listens_for(Session, "before_flush")
def _mirror_rule_audit(session: Session, _context: Any, _instances: Any) -> None:
    for obj in list(session.new):
        if isinstance(obj, RuleAudit):
            details = dict(obj.details or {})
            session.add(
                AuditEntry(
                    actor=obj.actor,
                    actor_key_id=obj.actor_key_id,
                    entity="rule",
                    entity_id=obj.rule_id,
                    action=obj.action,
                    details=_jsonable({"version": obj.version, **details}),
                )
            )


# Reading.


@dataclass(frozen=True)
class Page:
    entries: list[AuditEntry]
    next_cursor: str | None


def _encode(entry: AuditEntry) -> str:
    raw = f"{entry.at.isoformat()}|{entry.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (at, id) a cursor points after; BadRequest when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, entry_id = raw.partition("|")
        return datetime.fromisoformat(at), int(entry_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("cursor: not a cursor from this endpoint") from exc


async def page(
    session: AsyncSession,
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Newest first; ``cursor`` continues after the last entry of the previous page."""
    query = select(AuditEntry)
    if entity is not None:
        query = query.where(AuditEntry.entity == entity)
    if entity_id is not None:
        query = query.where(AuditEntry.entity_id == entity_id)
    if cursor is not None:
        at, entry_id = decode_cursor(cursor)
        query = query.where(tuple_(AuditEntry.at, AuditEntry.id) < tuple_(at, entry_id))
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode(rows[-1]) if more and rows else None)
