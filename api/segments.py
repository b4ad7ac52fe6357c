"""Segments (marketers): saved audiences over computed customer attributes.

Reads need ``rules:read`` and writes ``rules:write``, as for rules: whoever writes rules
writes the audiences that rules may require (``customer.segments contains seg_x``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import SessionDep, require
from api.errors import documented
from contracts.conditions import Condition
from db.models import Segment
from services.customers import segments
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/segments", tags=["segments"])
Reader = Annotated[Principal, Depends(require("rules:read"))]
Writer = Annotated[Principal, Depends(require("rules:write"))]


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    conditions: Condition = Field(
        examples=[{"field": "customer.orders_count", "op": "gte", "value": 3}]
    )

    @field_validator("conditions")
    @classmethod
    def _customer_fields(cls, value: Any) -> Any:
        problem = segments.field_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class SegmentOut(BaseModel):
    id: str
    name: str
    description: str | None
    conditions: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class MembersOut(BaseModel):
    customers: list[dict[str, Any]] = Field(
        description="id, email, name and key attributes of each member, in id order"
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when the scan is complete. "
        "A page reads a bounded number of customers, so it may hold fewer members than "
        "`limit` (even none) and still have a next cursor."
    )


def _out(row: Segment) -> SegmentOut:
    return SegmentOut.model_validate(row, from_attributes=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a segment",
    responses=documented(401, 403, 422),
)
async def create_segment(body: SegmentIn, session: SessionDep, principal: Writer) -> SegmentOut:
    row = await segments.create(
        session,
        name=body.name,
        description=body.description,
        condition=body.conditions,
        created_by=principal.key_id,
    )
    return _out(row)


@router.get("", summary="Every segment")
async def list_segments(session: SessionDep, _: Reader) -> list[SegmentOut]:
    return [_out(row) for row in await segments.list_all(session)]


@router.get("/{segment_id}", responses=documented(401, 403, 404))
async def get_segment(segment_id: str, session: SessionDep, _: Reader) -> SegmentOut:
    return _out(await segments.get(session, segment_id))


@router.put(
    "/{segment_id}",
    summary="Replace a segment's name, description and conditions",
    responses=documented(401, 403, 404, 422),
)
async def replace_segment(
    segment_id: str, body: SegmentIn, session: SessionDep, _: Writer
) -> SegmentOut:
    row = await segments.replace(
        session,
        segment_id,
        name=body.name,
        description=body.description,
        condition=body.conditions,
    )
    return _out(row)


@router.get(
    "/{segment_id}/customers",
    summary="The segment's members, paged in customer-id order",
    responses=documented(401, 403, 404, 422),
)
async def segment_customers(
    segment_id: str,
    session: SessionDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> MembersOut:
    row = await segments.get(session, segment_id)
    found, next_cursor = await segments.members(
        session, row, limit=limit, cursor=cursor, now=datetime.now(UTC)
    )
    return MembersOut(customers=found, next_cursor=next_cursor)
