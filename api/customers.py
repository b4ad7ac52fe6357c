"""GET /v1/customers/{id}: the profile Sutra keeps, with its consent history and computed
attributes; GET /v1/customers/{id}/journeys: the workflows that are or were about them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from api.deps import SessionDep, TemporalDep, require
from api.errors import documented
from contracts import search_attributes as sa
from contracts.errors import ServiceUnavailable
from db.models import JourneyEntry
from services.customers import profiles
from services.journeys import admission
from services.platform.api_keys import Principal

Ops = Annotated[Principal, Depends(require("ops"))]

router = APIRouter(prefix="/v1/customers", tags=["customers"])


class ConsentChangeOut(BaseModel):
    channel: str
    granted: bool
    previous: bool | None
    source: str
    event_id: str | None
    occurred_at: datetime


class CustomerOut(BaseModel):
    id: str
    email: str | None
    phone: str | None
    name: str | None
    locale: str | None
    timezone: str | None
    currency: str | None
    country: str | None
    birthday: date | None
    consent: dict[str, bool | None]
    attributes: dict[str, Any]
    first_seen_at: datetime
    updated_at: datetime
    consent_history: list[ConsentChangeOut]
    computed: dict[str, Any] = Field(
        description="What segments and conditions read: orders_count, total_spent, "
        "average_order_value, coupon_usage_rate, last_order_at, segments, ..."
    )


class RuleEntryOut(BaseModel):
    rule_id: str
    rule_version: int
    variant: str | None
    entered_at: datetime
    exited_at: datetime | None
    exit_reason: str | None
    test: bool


class JourneyOut(BaseModel):
    workflow_id: str
    run_id: str
    workflow_type: str
    status: str = Field(description="Temporal's: RUNNING, COMPLETED, TERMINATED, ...")
    started_at: datetime | None
    closed_at: datetime | None
    journey_status: str | None = Field(description="The workflow's JourneyStatus attribute")
    rule: RuleEntryOut | None = Field(description="The rule this run entered, if any")


class JourneysOut(BaseModel):
    journeys: list[JourneyOut]


@router.get("/{customer_id}", summary="A customer's profile", responses=documented(401, 403, 404))
async def get_customer(customer_id: str, session: SessionDep, _: Ops) -> CustomerOut:
    customer = await profiles.get(session, customer_id)
    history = await profiles.consent_history(session, customer_id)
    return CustomerOut(
        id=customer.id,
        email=customer.email,
        phone=customer.phone,
        name=customer.name,
        locale=customer.locale,
        timezone=customer.timezone,
        currency=customer.currency,
        country=customer.country,
        birthday=customer.birthday,
        consent={
            "email": customer.consent_email,
            "sms": customer.consent_sms,
            "whatsapp": customer.consent_whatsapp,
        },
        attributes=customer.attributes,
        first_seen_at=customer.first_seen_at,
        updated_at=customer.updated_at,
        consent_history=[ConsentChangeOut.model_validate(c, from_attributes=True) for c in history],
        computed={
            key: value
            for key, value in (await profiles.customer_context(session, customer_id)).items()
            if key not in _PROFILE_KEYS
        },
    )


_PROFILE_KEYS = frozenset(
    {"id", "email", "phone", "name", "locale", "timezone", "currency", "consent", "attributes"}
)


@router.get(
    "/{customer_id}/journeys",
    summary="The customer's workflows, running and past: carts, orders, lifecycle journeys",
    responses=documented(401, 403, 404, 503),
)
async def customer_journeys(
    customer_id: str,
    session: SessionDep,
    temporal: TemporalDep,
    _: Ops,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> JourneysOut:
    await profiles.get(session, customer_id)
    entries: dict[tuple[str, str | None], JourneyEntry] = {
        (e.workflow_id, e.run_id): e for e in await admission.entries_of(session, customer_id)
    }
    journeys: list[JourneyOut] = []
    try:
        async for execution in temporal.list_workflows(
            sa.equals(sa.CUSTOMER_ID, customer_id), limit=limit
        ):
            entry = entries.get((execution.id, execution.run_id)) or entries.get(
                (execution.id, None)
            )
            journeys.append(
                JourneyOut(
                    workflow_id=execution.id,
                    run_id=execution.run_id,
                    workflow_type=execution.workflow_type,
                    status=execution.status.name if execution.status else "UNKNOWN",
                    started_at=execution.start_time,
                    closed_at=execution.close_time,
                    journey_status=execution.typed_search_attributes.get(sa.JOURNEY_STATUS),
                    rule=RuleEntryOut.model_validate(entry, from_attributes=True)
                    if entry
                    else None,
                )
            )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not list the journeys: {exc.message}") from exc
    return JourneysOut(journeys=journeys)
