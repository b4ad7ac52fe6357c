"""GET /v1/customers/{id}: the profile Sutra keeps, with its consent history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import SessionDep, require
from api.errors import NotFound, documented
from db.models import ConsentChange, Customer
from services.api_keys import Principal

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


@router.get("/{customer_id}", summary="A customer's profile", responses=documented(401, 403, 404))
async def get_customer(
    customer_id: str, session: SessionDep, _: Annotated[Principal, Depends(require("ops"))]
) -> CustomerOut:
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer with id {customer_id!r}")
    history = await session.scalars(
        select(ConsentChange)
        .where(ConsentChange.customer_id == customer_id)
        .order_by(ConsentChange.occurred_at, ConsentChange.id)
    )
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
    )
