"""API key management (admin scope)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field

from api.deps import SessionDep, require
from api.errors import documented
from contracts.errors import NotFound
from db.models import ApiKey
from services.platform import api_keys, audit
from services.platform.api_keys import Principal, Scope

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])
Admin = Annotated[Principal, Depends(require("admin"))]
_ERRORS = documented(401, 403, 404, 422)


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["shop backend"])
    scopes: list[Scope] = Field(min_length=1, examples=[["events:write"]])


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    scopes: list[str]
    prefix: str = Field(description="The key's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls.model_validate(key, from_attributes=True)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The plaintext key. Shown once; only its hash is stored.")


@router.post("", status_code=status.HTTP_201_CREATED, responses=_ERRORS)
async def create_api_key(body: ApiKeyCreate, session: SessionDep, admin: Admin) -> ApiKeyCreated:
    key, plaintext = await api_keys.create_key(
        session, name=body.name, scopes=list(body.scopes), created_by=admin.key_id
    )
    audit.record(
        session, admin, "api_key", key.id, "create", {"name": key.name, "scopes": key.scopes}
    )
    return ApiKeyCreated(**ApiKeyOut.of(key).model_dump(), key=plaintext)


@router.get("", responses=_ERRORS)
async def list_api_keys(session: SessionDep, _: Admin) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(k) for k in await api_keys.list_keys(session)]


@router.delete(
    "/{key_id}",
    responses=_ERRORS,
    description="Revokes the key at once here; other API processes refuse it within seconds.",
)
async def revoke_api_key(
    key_id: uuid.UUID, request: Request, session: SessionDep, admin: Admin
) -> ApiKeyOut:
    key = await api_keys.revoke_key(session, key_id)
    if key is None:
        raise NotFound(f"no API key with id {key_id}")
    if session.is_modified(key):  # revoking a revoked key changes nothing
        audit.record(session, admin, "api_key", key_id, "revoke", {"name": key.name})
    request.app.state.key_cache.forget(key_id)
    return ApiKeyOut.of(key)
