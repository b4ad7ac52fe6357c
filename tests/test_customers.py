"""Customer profiles upserted from events: newest data wins, consent changes are kept."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import ConsentChange, Customer
from tests.conftest import Api
from tests.factories import cart_updated, uid


async def _customer(sessionmaker: async_sessionmaker[AsyncSession], customer_id: str) -> Customer:
    async with sessionmaker() as session:
        customer = await session.get(Customer, customer_id)
    assert customer is not None
    return customer


async def _consent_history(
    sessionmaker: async_sessionmaker[AsyncSession], customer_id: str
) -> list[tuple[str, bool, bool | None, str | None]]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(ConsentChange)
            .where(ConsentChange.customer_id == customer_id)
            .order_by(ConsentChange.id)
        )
        return [(r.channel, r.granted, r.previous, r.event_id) for r in rows]


async def test_first_event_creates_the_profile_normalised(api: Api, sessionmaker):
    customer_id = uid("c")
    event = cart_updated(
        customer_id=customer_id,
        email="Ayesha@Example.COM",
        phone="0092 300 1234567",
        locale="ur_PK",
        country="pk",
        loyalty_tier="gold",
    )

    assert (await api.post_event(event)).status_code == 202

    customer = await _customer(sessionmaker, customer_id)
    assert customer.email == "Ayesha@example.com"
    assert customer.phone == "+923001234567"
    assert customer.locale == "ur-PK"
    assert customer.country == "PK"
    assert customer.currency == "PKR"  # from the cart, as the customer block has none
    assert customer.timezone == "Asia/Karachi"
    assert customer.attributes == {"loyalty_tier": "gold"}
    assert (customer.consent_email, customer.consent_sms, customer.consent_whatsapp) == (
        True,
        True,
        True,
    )


async def test_an_older_event_arriving_late_does_not_overwrite_newer_data(api: Api, sessionmaker):
    customer_id = uid("c")
    newer = cart_updated(
        customer_id=customer_id,
        occurred_at="2026-11-22T12:00:00Z",
        email="new@example.com",
        name=None,
        consent={"sms": False},
    )
    older = cart_updated(
        customer_id=customer_id,
        occurred_at="2026-11-22T09:00:00Z",
        email="old@example.com",
        name="Ayesha Khan",
        consent={"sms": True, "email": True},
    )

    await api.post_event(newer)
    await api.post_event(older)

    customer = await _customer(sessionmaker, customer_id)
    assert customer.email == "new@example.com"
    assert customer.name == "Ayesha Khan"  # the newer event said nothing about the name
    assert customer.consent_sms is False
    assert customer.consent_email is True


async def test_consent_changes_are_recorded_with_their_source(api: Api, sessionmaker):
    customer_id = uid("c")
    granted = cart_updated(
        customer_id=customer_id,
        occurred_at="2026-11-22T09:00:00Z",
        consent={"email": True, "sms": True},
    )
    unchanged = cart_updated(
        customer_id=customer_id, occurred_at="2026-11-22T10:00:00Z", consent={"email": True}
    )
    opted_out = cart_updated(
        customer_id=customer_id, occurred_at="2026-11-22T11:00:00Z", consent={"sms": False}
    )

    for event in (granted, unchanged, opted_out):
        assert (await api.post_event(event)).status_code == 202

    assert await _consent_history(sessionmaker, customer_id) == [
        ("email", True, None, granted["id"]),
        ("sms", True, None, granted["id"]),
        ("sms", False, True, opted_out["id"]),
    ]


async def test_a_batch_touching_one_customer_applies_events_in_time_order(api: Api, sessionmaker):
    customer_id = uid("c")
    later = cart_updated(
        customer_id=customer_id, occurred_at="2026-11-22T12:00:00Z", name="Later Name"
    )
    earlier = cart_updated(
        customer_id=customer_id, occurred_at="2026-11-22T08:00:00Z", name="Earlier Name"
    )

    response = await api.post_batch([later, earlier])

    assert response.json()["accepted"] == 2
    customer = await _customer(sessionmaker, customer_id)
    assert customer.name == "Later Name"
    assert customer.first_seen_at.isoformat().startswith("2026-11-22T08:00:00")


async def test_a_duplicate_event_does_not_touch_the_profile(api: Api, sessionmaker):
    customer_id = uid("c")
    event = cart_updated(customer_id=customer_id, name="Ayesha")
    await api.post_event(event)
    before = await _customer(sessionmaker, customer_id)

    event["customer"]["name"] = "Someone Else"
    response = await api.post_event(event)

    assert response.json()["status"] == "duplicate"
    after = await _customer(sessionmaker, customer_id)
    assert after.name == "Ayesha"
    assert after.updated_at == before.updated_at


async def test_ops_can_read_a_profile_and_its_consent_history(api: Api):
    customer_id = uid("c")
    await api.post_event(cart_updated(customer_id=customer_id, occurred_at="2026-11-22T09:00:00Z"))
    await api.post_event(
        cart_updated(
            customer_id=customer_id, occurred_at="2026-11-22T10:00:00Z", consent={"sms": False}
        )
    )

    response = await api.get(f"/v1/customers/{customer_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["phone"] == "+923001234567"
    assert body["consent"] == {"email": True, "sms": False, "whatsapp": True}
    assert [(c["channel"], c["granted"]) for c in body["consent_history"]] == [
        ("email", True),
        ("sms", True),
        ("whatsapp", True),
        ("sms", False),
    ]
    assert (await api.get(f"/v1/customers/{uid('c')}")).status_code == 404
