"""POST /v1/events and /v1/events/batch: the commerce backend's way in.

Bodies are parsed here rather than by FastAPI so that authentication is checked before a
byte of input is interpreted, and so that a batch can reject one event and keep the rest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, Field, ValidationError

from api.deps import SessionDep, SettingsDep, require
from api.errors import ErrorBody, documented, field_errors, summarize
from api.openapi import EVENT_SCHEMA_REF
from config.settings import Settings
from contracts.errors import Conflict, MalformedJson, Unprocessable
from contracts.events import EVENT_ADAPTER, EVENT_TYPES
from services.delivery import outbox
from services.intake.service import future_skew, ingest, received
from services.platform import audit, metrics
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/events", tags=["events"])

_ERRORS = documented(400, 401, 403, 413, 422, 503)


class EventAccepted(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]


class BatchItemResult(BaseModel):
    index: int = Field(description="Position of the event in the request")
    id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    error: ErrorBody | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    results: list[BatchItemResult]


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        content_type = request.headers.get("content-type", "")
        hint = "" if "json" in content_type else f" (sent as {content_type or 'no content type'})"
        raise MalformedJson(f"request body is not valid JSON: {exc}{hint}") from exc


def _nul_at(value: Any, loc: list[str | int]) -> list[str | int] | None:
    """Where a string (or key) holds U+0000, which PostgreSQL cannot store; None if nowhere."""
    if isinstance(value, str):
        return loc if "\x00" in value else None
    pairs: Any = value.items() if isinstance(value, dict) else ()
    if isinstance(value, list):
        pairs = enumerate(value)
    for key, item in pairs:
        found = [*loc, key] if "\x00" in str(key) else _nul_at(item, [*loc, key])
        if found is not None:
            return found
    return None


def _validate(item: Any, received_at: datetime, settings: Settings) -> Any:
    nul = _nul_at(item, [])
    if nul is not None:
        fields = [{"loc": nul, "msg": "text must not contain the NUL character (\\u0000)"}]
        raise Unprocessable(summarize(fields), fields=fields)
    try:
        event = EVENT_ADAPTER.validate_python(item)
    except ValidationError as exc:
        fields = field_errors(exc.errors())
        raise Unprocessable(summarize(fields), fields=fields) from exc
    ahead = future_skew(event.occurred_at, received_at, settings)
    if ahead is not None:
        fields = [{"loc": ["occurred_at"], "msg": ahead}]
        raise Unprocessable(summarize(fields), fields=fields)
    return event


def _count_rejected(item: Any) -> None:
    kind = item.get("type") if isinstance(item, dict) else None
    # Only known types become label values: clients must not mint metric series.
    metrics.EVENTS.labels(kind if kind in EVENT_TYPES else "unknown", "rejected").inc()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventAccepted,
    summary="Send one event",
    description=(
        "Stores the event and returns 202 once it is durable, whether or not Temporal is up; "
        "it then reaches its workflows in order. The same `id` again returns 200 `duplicate` "
        "and has no further effect."
    ),
    responses={200: {"model": EventAccepted, "description": "Already received"}, **_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": EVENT_SCHEMA_REF}}},
        }
    },
)
async def post_event(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("events:write"))],
) -> EventAccepted:
    body = await _json_body(request)
    received_at = datetime.now(UTC)
    try:
        event = _validate(body, received_at, settings)
    except Unprocessable:
        _count_rejected(body)
        raise
    [outcome] = await ingest(
        session, [event], settings=settings, api_key_id=principal.key_id, received_at=received_at
    )
    metrics.EVENTS.labels(event.type, outcome).inc()
    if outcome == "duplicate":
        response.status_code = status.HTTP_200_OK
    return EventAccepted(id=event.id, status=outcome)


@router.post(
    "/batch",
    status_code=207,
    response_model=BatchResult,
    summary="Send up to 500 events",
    description=(
        "Each event is validated on its own: valid ones are stored (or reported as duplicates), "
        "invalid ones are rejected with the error they would get alone. The body holds one "
        "result per event, in request order."
    ),
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["events"],
                        "properties": {
                            "events": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 500,
                                "items": {"$ref": EVENT_SCHEMA_REF},
                            }
                        },
                    }
                }
            },
        }
    },
)
async def post_batch(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("events:write"))],
) -> BatchResult:
    body = await _json_body(request)
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise Unprocessable(
            "events: must be a list of events",
            fields=[{"loc": ["events"], "msg": "must be a list of events"}],
        )
    limit = settings.max_batch_events
    if not items or len(items) > limit:
        msg = (
            "must hold at least one event"
            if not items
            else f"at most {limit} events per batch, got {len(items)}"
        )
        raise Unprocessable(f"events: {msg}", fields=[{"loc": ["events"], "msg": msg}])

    results: list[BatchItemResult] = []
    valid: list[tuple[int, Any]] = []
    received_at = datetime.now(UTC)
    for index, item in enumerate(items):
        try:
            valid.append((index, _validate(item, received_at, settings)))
        except Unprocessable as exc:
            given_id = item.get("id") if isinstance(item, dict) else None
            fields = [
                {"loc": ["events", index, *f["loc"]], "msg": f["msg"]} for f in exc.fields or ()
            ]
            results.append(
                BatchItemResult(
                    index=index,
                    id=given_id if isinstance(given_id, str) else None,
                    status="rejected",
                    error=ErrorBody(error=exc.code, detail=exc.detail, fields=fields),
                )
            )
            _count_rejected(item)
    outcomes = await ingest(
        session,
        [e for _, e in valid],
        settings=settings,
        api_key_id=principal.key_id,
        received_at=received_at,
    )
    for (index, event), outcome in zip(valid, outcomes, strict=True):
        results.append(BatchItemResult(index=index, id=event.id, status=outcome))
        metrics.EVENTS.labels(event.type, outcome).inc()
    results.sort(key=lambda r: r.index)
    counts = {
        s: sum(1 for r in results if r.status == s) for s in ("accepted", "duplicate", "rejected")
    }
    return BatchResult(results=results, **counts)


class RouteOut(BaseModel):
    seq: int = Field(description="Position in the outbox: deliveries go out in this order")
    origin: str = Field(description="event, or redelivery (POST /v1/events/{id}/redeliver)")
    workflow_id: str
    workflow_type: str
    kind: str
    status: Literal["pending", "delivered", "skipped", "delivered_to_closed"] = Field(
        description="delivered_to_closed: the order or cart had ended; the ended workflow "
        "was told (and reopened when the event still matters to it, see detail)"
    )
    attempts: int
    last_error: str | None
    delivered_at: datetime | None
    detail: str | None = Field(
        default=None, description="How a delivery to an ended workflow was judged"
    )


class EventOut(BaseModel):
    id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    payload: dict[str, Any]
    routes: list[RouteOut] = Field(
        description="Where this event goes in Temporal, and if it got there"
    )


@router.get(
    "/{event_id}",
    summary="A received event and its delivery to workflows",
    responses=documented(401, 403, 404),
)
async def get_event(
    event_id: str, session: SessionDep, _: Annotated[Principal, Depends(require("ops"))]
) -> EventOut:
    event = await received(session, event_id)
    routes = await outbox.routes_of(session, event_id)
    return EventOut(
        id=event.id,
        type=event.type,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        payload=event.payload,
        routes=[RouteOut.model_validate(r, from_attributes=True) for r in routes],
    )


class Redelivered(BaseModel):
    event_id: str
    requeued: list[RouteOut] = Field(description="The new deliveries, pending until sent")
    left: list[RouteOut] = Field(
        description="Deliveries not queued again: delivered, or still pending (the "
        "dispatcher retries those on its own)"
    )


@router.post(
    "/{event_id}/redeliver",
    summary="Hand a stored event to its workflows again",
    description=(
        "Queues again, through the outbox, each of the event's deliveries that reached no "
        f"running workflow ({', '.join(outbox.REDELIVERABLE)}). Workflows ignore event ids "
        "they have seen, so this is safe to repeat; a redelivery arrives after whatever the "
        "workflow was sent since. 409 when there is nothing to queue again."
    ),
    responses=documented(401, 403, 404, 409),
)
async def redeliver_event(
    event_id: str, session: SessionDep, principal: Annotated[Principal, Depends(require("ops"))]
) -> Redelivered:
    await received(session, event_id)
    requeued, left = await outbox.redeliver(session, event_id)
    if not requeued:
        states = ", ".join(f"{r.workflow_id}: {r.status}" for r in left) or "no deliveries"
        raise Conflict(
            f"event {event_id} has nothing to redeliver ({states}); only "
            f"{' or '.join(outbox.REDELIVERABLE)} deliveries are queued again"
        )
    await outbox.notify(session)
    audit.record(
        session,
        principal,
        "event",
        event_id,
        "redeliver",
        {"workflows": [r.workflow_id for r in requeued]},
    )
    return Redelivered(
        event_id=event_id,
        requeued=[RouteOut.model_validate(r, from_attributes=True) for r in requeued],
        left=[RouteOut.model_validate(r, from_attributes=True) for r in left],
    )
