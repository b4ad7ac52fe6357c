"""Bad input gets a 4xx in the documented shape, naming the field, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Customer, Event, EventRoute
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import cart_updated, order_placed, uid


async def _counts(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int, int]:
    async with sessionmaker() as session:
        return (
            await session.scalar(select(func.count()).select_from(Event)) or 0,
            await session.scalar(select(func.count()).select_from(EventRoute)) or 0,
            await session.scalar(select(func.count()).select_from(Customer)) or 0,
        )


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = event
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()

INVALID_EVENTS = [
    pytest.param(_set("type", "cart.exploded"), ["type"], "unknown event type", id="unknown-type"),
    pytest.param(_set("type", _DELETE), ["type"], "event type is missing", id="missing-type"),
    pytest.param(_set("id", _DELETE), ["id"], "Field required", id="missing-id"),
    pytest.param(_set("id", ""), ["id"], "at least 1 character", id="empty-id"),
    pytest.param(
        _set("data.currency", "PKX"), ["data", "currency"], "ISO 4217", id="wrong-currency"
    ),
    pytest.param(
        _set("customer.phone", "+92300"), ["customer", "phone"], "phone", id="invalid-phone"
    ),
    pytest.param(
        _set("customer.phone", "03001234567"), ["customer", "phone"], "E.164", id="local-phone"
    ),
    pytest.param(
        _set("customer.email", "ayesha@"), ["customer", "email"], "email", id="invalid-email"
    ),
    pytest.param(
        _set("customer.timezone", "Asia/Lahore"),
        ["customer", "timezone"],
        "IANA time zone",
        id="invalid-timezone",
    ),
    pytest.param(
        _set("customer.locale", "xx-QQ"), ["customer", "locale"], "locale", id="invalid-locale"
    ),
    pytest.param(
        _set("data.items.0.quantity", -1),
        ["data", "items", 0, "quantity"],
        "greater than or equal to 1",
        id="negative-quantity",
    ),
    pytest.param(
        _set("data.items.0.unit_price", 4500.5),
        ["data", "items", 0, "unit_price"],
        "decimal string",
        id="float-money",
    ),
    pytest.param(
        _set("data.items.0.unit_price", "-1.00"),
        ["data", "items", 0, "unit_price"],
        "negative",
        id="negative-price",
    ),
    pytest.param(
        _set("data.items.0.unit_price", "45.001"),
        ["data"],
        "more than 2 decimal places",
        id="sub-minor-unit-price",
    ),
    pytest.param(
        _set("occurred_at", "2026-11-22T10:00:00"),
        ["occurred_at"],
        "timezone",
        id="naive-timestamp",
    ),
    pytest.param(
        _set("occurred_at", "9999-12-31T23:59:59-01:00"),
        ["occurred_at"],
        "outside the years 1-9999 once converted to UTC",
        id="timestamp-past-year-9999-in-utc",
    ),
    pytest.param(
        _set("occurred_at", "1970-01-01T00:00:00Z"),
        ["occurred_at"],
        "before 2000-01-01",
        id="unix-time-zero",
    ),
    pytest.param(
        _set("occurred_at", "2099-01-01T00:00:00+05:00"),
        ["occurred_at"],
        "ahead of Sutra's clock",
        id="far-future-timestamp",
    ),
    pytest.param(_set("customer", _DELETE), ["customer"], "Field required", id="missing-customer"),
    pytest.param(_set("data.cart_id", _DELETE), ["data", "cart_id"], "required", id="no-cart-id"),
]


@pytest.mark.parametrize(("mutate", "loc", "message"), INVALID_EVENTS)
async def test_invalid_event_is_refused_and_nothing_changes(
    api: Api,
    sessionmaker: async_sessionmaker[AsyncSession],
    mutate: Callable[[dict[str, Any]], None],
    loc: list[Any],
    message: str,
):
    event = cart_updated(customer_id=uid("c"))
    mutate(event)
    before = await _counts(sessionmaker)

    response = await api.post_event(event)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["fields"][0]["loc"] == loc, body
    assert message.lower() in body["fields"][0]["msg"].lower(), body
    assert message.lower() in body["detail"].lower()
    assert await _counts(sessionmaker) == before


async def test_order_amounts_must_add_up(api: Api, sessionmaker):
    event = order_placed(cart_id=None, customer_id=uid("c"))
    event["data"].update(
        payment_type="partial_cod", upfront_amount="500.00", remaining_amount="1.00"
    )
    before = await _counts(sessionmaker)

    response = await api.post_event(event)

    assert response.status_code == 422
    assert "upfront_amount + remaining_amount must equal total" in response.json()["detail"]
    assert await _counts(sessionmaker) == before


async def test_zero_decimal_currency_refuses_fractions(api: Api):
    event = cart_updated(currency="JPY")
    event["data"]["items"][0]["unit_price"] = "1200.50"

    response = await api.post_event(event)

    assert response.status_code == 422
    assert "more than 0 decimal places for JPY" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"id": "evt_1", "type": "cart.updated",', id="truncated"),
        pytest.param(b"not json at all", id="garbage"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
    ],
)
async def test_malformed_json_is_a_400(api: Api, sessionmaker, body: bytes):
    before = await _counts(sessionmaker)

    response = await api.http.post(
        "/v1/events", content=body, headers={**auth_header(), "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert "not valid JSON" in response.json()["detail"]
    assert await _counts(sessionmaker) == before


async def test_a_json_array_is_not_an_event(api: Api):
    response = await api.http.post("/v1/events", json=[cart_updated()], headers=auth_header())

    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_oversized_batch_is_refused_whole(api: Api, sessionmaker):
    events = [cart_updated(items=[]) for _ in range(501)]
    before = await _counts(sessionmaker)

    response = await api.post_batch(events)

    assert response.status_code == 422
    body = response.json()
    assert body["fields"] == [{"loc": ["events"], "msg": "at most 500 events per batch, got 501"}]
    assert await _counts(sessionmaker) == before


@pytest.mark.parametrize(
    ("payload", "msg"),
    [
        pytest.param({"events": []}, "must hold at least one event", id="empty"),
        pytest.param({"events": "x"}, "must be a list of events", id="not-a-list"),
        pytest.param({}, "must be a list of events", id="missing"),
    ],
)
async def test_batch_shape_errors(api: Api, payload: dict[str, Any], msg: str):
    response = await api.http.post("/v1/events/batch", json=payload, headers=auth_header())

    assert response.status_code == 422
    assert response.json()["fields"] == [{"loc": ["events"], "msg": msg}]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
async def test_body_over_one_megabyte_is_refused(api: Api, sessionmaker, path: str):
    event = cart_updated()
    event["padding"] = "x" * (1024 * 1024)
    body = json.dumps({"events": [event]} if path.endswith("batch") else event).encode()
    before = await _counts(sessionmaker)

    response = await api.http.post(
        path, content=body, headers={**auth_header(), "Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert await _counts(sessionmaker) == before


async def test_body_streamed_without_length_is_limited_too(api: Api, sessionmaker):
    chunk = b" " * 65536

    async def stream():
        yield b'{"id": "evt_stream", "pad": "'
        for _ in range(20):  # 1.25 MiB, never announced in Content-Length
            yield chunk
        yield b'"}'

    before = await _counts(sessionmaker)
    response = await api.http.post(
        "/v1/events",
        content=stream(),
        headers={**auth_header(), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert await _counts(sessionmaker) == before


async def test_unknown_route_uses_the_error_shape(api: Api):
    response = await api.get("/v1/nowhere")

    assert response.status_code == 404
    assert set(response.json()) == {"error", "detail"}


def auth_header() -> dict[str, str]:
    return auth(ADMIN_KEY)
