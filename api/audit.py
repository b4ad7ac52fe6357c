"""The audit log (admin): every change to rules, templates, API keys and orders, newest
first — who (the API key's name and id), when, what."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import SessionDep, require
from api.errors import documented
from services.platform import audit
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Admin = Annotated[Principal, Depends(require("admin"))]


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str | None = Field(description="The API key's name")
    actor_key_id: uuid.UUID | None
    entity: str
    entity_id: str
    action: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page"
    )


@router.get(
    "", summary="Who changed what, when (newest first)", responses=documented(400, 401, 403, 422)
)
async def list_audit(
    session: SessionDep,
    _: Admin,
    entity: Literal[
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
    | None = None,
    entity_id: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    found = await audit.page(
        session, entity=entity, entity_id=entity_id, limit=limit, cursor=cursor
    )
    return AuditPage(
        entries=[AuditEntryOut.model_validate(e, from_attributes=True) for e in found.entries],
        next_cursor=found.next_cursor,
    )
