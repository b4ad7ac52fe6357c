"""GET /v1/customers/{id}: the profile Sutra keeps, with its consent history and computed
attributes; GET /v1/customers/{id}/journeys: the workflows that are or were about them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, TemporalDep, require
from api.errors import documented
from contracts import search_attributes as sa
from db.models import JourneyEntry
from services.customers import profiles
from services.journeys import admission, visibility
from services.platform.api_keys import Principal
from services.platform.temporal import ui_url

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
    exit_reason: str | None = Field(description="completed, ordered, ended_by_ops, ...")
    test: bool


class JourneyOut(BaseModel):
    workflow_id: str
    run_id: str
    workflow_type: str = Field(description="CartWorkflow, OrderWorkflow, LifecycleJourney, ...")
    status: str = Field(description="Temporal's: RUNNING, COMPLETED, TERMINATED, ...")
    started_at: datetime | None
    closed_at: datetime | None
    journey_status: str | None = Field(
        description="The workflow's JourneyStatus attribute: a cart's or order's status, a "
        "lifecycle journey's (running, ended, ...), or paused while ops hold it"
    )
    rule_id: str | None = Field(description="The RuleId attribute: the rule it entered")
    rule_version: int | None = Field(description="The RuleVersion attribute: its pinned version")
    cart_id: str | None
    order_id: str | None
    rule: RuleEntryOut | None = Field(description="The rule this run entered, if any")
    temporal_ui_url: str = Field(description="This run in the Temporal UI")


class JourneysOut(BaseModel):
    journeys: list[JourneyOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


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
    description=(
        "From Temporal visibility (`CustomerId`), newest first as Temporal orders them, "
        "`limit` per page. Current details are not read here (that asks the worker once per "
        "workflow): `temporal_ui_url` shows them."
    ),
    responses=documented(401, 403, 404, 422, 503),
)
async def customer_journeys(
    customer_id: str,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    _: Ops,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="`next_cursor` of the previous page")
    ] = None,
) -> JourneysOut:
    await profiles.get(session, customer_id)
    entries: dict[tuple[str, str | None], JourneyEntry] = {
        (e.workflow_id, e.run_id): e for e in await admission.entries_of(session, customer_id)
    }
    page = await visibility.customer_workflows(temporal, customer_id, limit=limit, cursor=cursor)
    journeys: list[JourneyOut] = []
    for execution in page.executions:
        attributes = execution.typed_search_attributes
        entry = entries.get((execution.id, execution.run_id)) or entries.get((execution.id, None))
        journeys.append(
            JourneyOut(
                workflow_id=execution.id,
                run_id=execution.run_id,
                workflow_type=execution.workflow_type,
                status=execution.status.name if execution.status else "UNKNOWN",
                started_at=execution.start_time,
                closed_at=execution.close_time,
                journey_status=attributes.get(sa.JOURNEY_STATUS),
                rule_id=attributes.get(sa.RULE_ID) or (entry.rule_id if entry else None),
                rule_version=attributes.get(sa.RULE_VERSION)
                or (entry.rule_version if entry else None),
                cart_id=attributes.get(sa.CART_ID),
                order_id=attributes.get(sa.ORDER_ID),
                rule=RuleEntryOut.model_validate(entry, from_attributes=True) if entry else None,
                temporal_ui_url=ui_url(
                    settings, temporal.namespace, execution.id, execution.run_id
                ),
            )
        )
    return JourneysOut(journeys=journeys, next_cursor=page.next_cursor)
