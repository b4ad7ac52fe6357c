"""Events as a commerce backend would send them, with fresh ids per call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import EVENT_ADAPTER
from services.customers import profiles

T = TypeVar("T")


# A cart as templates see it (see services/templating/samples.py).
CART_CONTEXT = {
    "cart": {
        "id": "cart_1",
        "currency": "PKR",
        "total": "4500.00",
        "item_count": 1,
        "line_count": 1,
        "first_item_name": "Lawn suit",
        "checkout_url": "https://shop.example.com/c/1",
        "items": [
            {
                "sku": "SKU1",
                "name": "Lawn suit",
                "quantity": 1,
                "unit_price": "4500.00",
                "line_total": "4500.00",
                "category": "apparel",
                "url": None,
                "image_url": None,
            }
        ],
    }
}


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ago(**delta: float) -> str:
    """An ISO time that long before now (``ago(minutes=5)``): events a test dates in the
    past must stay recent as the calendar moves on, or intake takes them as late history
    that starts no journey (SUTRA_EVENT_LATE_AFTER)."""
    return (datetime.now(UTC) - timedelta(**delta)).isoformat().replace("+00:00", "Z")


def customer(customer_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {
        "id": customer_id or uid("c"),
        "email": "ayesha@example.com",
        "phone": "+923001234567",
        "name": "Ayesha",
        "locale": "en-PK",
        "timezone": "Asia/Karachi",
        "consent": {"email": True, "sms": True, "whatsapp": True},
        **overrides,
    }


def item(sku: str = "SKU1", quantity: int = 1, unit_price: str = "4500.00") -> dict[str, Any]:
    return {
        "sku": sku,
        "name": "Lawn suit",
        "quantity": quantity,
        "unit_price": unit_price,
        "category": "apparel",
    }


def cart_updated(
    cart_id: str | None = None,
    *,
    customer_id: str | None = None,
    items: list[dict[str, Any]] | None = None,
    occurred_at: str | None = None,
    event_id: str | None = None,
    currency: str = "PKR",
    **customer_overrides: Any,
) -> dict[str, Any]:
    return {
        "id": event_id or uid("evt"),
        "type": "cart.updated",
        "occurred_at": occurred_at or now_iso(),
        "customer": customer(customer_id, **customer_overrides),
        "data": {
            "cart_id": cart_id or uid("cart"),
            "currency": currency,
            "checkout_url": "https://shop.example/c/9",
            "items": [item()] if items is None else items,
        },
    }


def order_placed(
    order_id: str | None = None,
    *,
    cart_id: str | None,
    customer_id: str,
    occurred_at: str | None = None,
    total: str = "4500.00",
) -> dict[str, Any]:
    return {
        "id": uid("evt"),
        "type": "order.placed",
        "occurred_at": occurred_at or now_iso(),
        "customer": customer(customer_id),
        "data": {
            "order_id": order_id or uid("ord"),
            "cart_id": cart_id,
            "items": [item()],
            "total": total,
            "currency": "PKR",
            "payment_type": "cod",
            "payment_status": "pending",
            "shipping": {"city": "Lahore", "postal_code": "54000", "country": "PK"},
        },
    }


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = 15.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Await ``probe`` until it returns a truthy value (or stops raising); fail after ``within``."""
    deadline = asyncio.get_running_loop().time() + within
    last: BaseException | None = None
    while True:
        try:
            value = await probe()
            if value:
                return value
        except Exception as exc:
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"gave up waiting for {what} after {within}s; last error: {last!r}"
            )
        await asyncio.sleep(interval)


def archived_rule(rule_id: str, name: str, trigger: str = "cart.abandoned") -> list[Any]:
    """A rule and its version 1 as rows, archived: figures can be credited to it, and no
    other test's customer can enter it."""
    from db.models import Rule, RuleVersion

    definition = {
        "name": name,
        "trigger": {"event": trigger},
        "steps": [{"send": {"channels": ["sms"], "template": "cart_reminder_1"}}],
    }
    return [
        Rule(id=rule_id, name=name, trigger_event=trigger, status="archived", version=1),
        RuleVersion(rule_id=rule_id, version=1, definition=definition),
    ]


async def known_customer(
    sessionmaker: async_sessionmaker[AsyncSession],
    customer_id: str | None = None,
    **overrides: Any,
) -> str:
    """A customer Sutra knows, written straight to the database as intake would from a
    ``cart.updated`` (``overrides`` go to ``cart_updated``); its id."""
    customer_id = customer_id or uid("c")
    event = EVENT_ADAPTER.validate_python(cart_updated(customer_id=customer_id, **overrides))
    async with sessionmaker() as session, session.begin():
        await profiles.upsert_from_events(session, [event])
    return customer_id
