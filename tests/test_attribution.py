"""Honest attribution on real PostgreSQL through the API: one order credited to at most one
message across all rules, by the documented model (last touch, click > open > delivery >
send, per-channel windows, a rule's own windows); the model changed and past credit
recomputed, audited; and bad input refused naming the field."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from contracts.rules import RuleDefinition
from db.models import Attribution, AttributionModel, Event, JourneyEntry, Message
from services.journeys import attribution_model, rules
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import uid

ACTOR = rules.Actor(key_id=None, name="tests")
# Days no other test places orders on: each recompute below covers one test's alone.
FIRST_DAY = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
SECOND_DAY = datetime(2026, 1, 16, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
DEFAULT = {"email": "P5D", "sms": "P1D", "whatsapp": "P1D"}


@pytest.fixture(autouse=True)
async def _model_as_configured(api: Api) -> AsyncIterator[None]:
    """Each test starts, and later tests in this database go on, under the settings'
    windows, whatever an earlier test (the API fuzzer) put in force."""
    async with api.app.state.sessionmaker() as session, session.begin():
        await session.execute(delete(AttributionModel))
    yield
    async with api.app.state.sessionmaker() as session, session.begin():
        await session.execute(delete(AttributionModel))


async def _rule(session: AsyncSession, name: str, **changes: Any) -> str:
    definition = {
        "name": name,
        "trigger": {"event": "customer.created"},
        # Active, but no customer of another test enters it: tests share the database.
        "conditions": {"field": "customer.id", "op": "eq", "value": uid("nobody")},
        "steps": [{"send": {"channels": ["email", "sms", "whatsapp"], "template": "welcome"}}],
        **changes,
    }
    rule, _ = await rules.create(
        session, RuleDefinition.model_validate(definition), ACTOR, status="active"
    )
    return rule.id


@dataclass
class Touch:
    rule: str
    channel: str
    sent: timedelta  # before the order
    delivered: timedelta | None = None
    opened: timedelta | None = None
    clicked: timedelta | None = None  # negative: after the order


def _message(customer_id: str, touch: Touch, t: datetime) -> Message:
    def at(before: timedelta | None) -> datetime | None:
        return None if before is None else t - before

    status = (
        "clicked"
        if touch.clicked is not None
        else "opened"
        if touch.opened is not None
        else "delivered"
        if touch.delivered is not None
        else "sent"
    )
    return Message(
        id=uuid.uuid4(),
        key=uid("key"),
        customer_id=customer_id,
        channel=touch.channel,
        template="welcome",
        kind="marketing",
        status=status,
        rule_id=touch.rule,
        rule_version=1,
        step="0",
        workflow_id=f"journey/{touch.rule}/{customer_id}",
        sent_at=at(touch.sent),
        delivered_at=at(touch.delivered),
        opened_at=at(touch.opened),
        clicked_at=at(touch.clicked),
    )


def _order(customer_id: str, total: str, t: datetime) -> Event:
    order_id = uid("o")
    payload = {
        "id": uid("evt"),
        "type": "order.placed",
        "occurred_at": t.isoformat(),
        "customer": {"id": customer_id},
        "data": {"order_id": order_id, "total": total, "currency": "PKR", "items": []},
    }
    return Event(
        id=payload["id"],
        type="order.placed",
        occurred_at=t,
        customer_id=customer_id,
        order_id=order_id,
        payload=payload,
        payload_sha256=hashlib.sha256(str(payload).encode()).hexdigest(),
    )


async def _history(api: Api, settings: Settings, t: datetime) -> tuple[list[str], dict[str, str]]:
    """Three rules touching the same customers before their orders (one order each), and
    each rule's journey asking credit for it, as the workflows do. Returns the rules and,
    per order, the rule the model credits (or "none")."""
    sessionmaker = api.app.state.sessionmaker
    async with sessionmaker() as session, session.begin():
        a = await _rule(session, "A")
        b = await _rule(session, "B")
        c = await _rule(session, "C (own sms window)", attribution_windows={"sms": "PT48H"})
    cases: list[tuple[str, list[Touch], str]] = [
        # A click three days before beats a delivery and a plain send since.
        (
            "4500.00",
            [
                Touch(a, "email", 3 * D, 3 * D, 3 * D, 2 * D),
                Touch(b, "sms", 2 * H, 2 * H),
                Touch(c, "whatsapp", H / 2),
            ],
            a,
        ),
        # An open beats a delivery; B's SMS is past its 24 h window.
        (
            "1200.00",
            [
                Touch(b, "sms", 30 * H, 30 * H),
                Touch(c, "email", 4 * D, 4 * D, 4 * D - H),
                Touch(a, "whatsapp", H, H),
            ],
            c,
        ),
        # Equals: the latest delivery wins.
        ("800.00", [Touch(a, "email", 2 * D, 2 * D), Touch(b, "email", D, D)], b),
        # A click after the order does not count: A is a delivery, older than B's.
        (
            "999.50",
            [Touch(a, "email", D, D, None, -H), Touch(b, "sms", 2 * H, 2 * H)],
            b,
        ),
        # C's own 48 h SMS window covers what B's 24 h does not.
        ("650.00", [Touch(b, "sms", 30 * H, 30 * H), Touch(c, "sms", 30 * H, 30 * H)], c),
        # Nothing in its window: credited to no one.
        ("300.00", [Touch(a, "email", 6 * D, 6 * D, 6 * D, 6 * D)], "none"),
    ]
    expected: dict[str, str] = {}
    for total, touches, winner in cases:
        customer_id = uid("c_attr")
        order = _order(customer_id, total, t)
        expected[str(order.order_id)] = winner
        async with sessionmaker() as session, session.begin():
            session.add(order)
            for touch in touches:
                session.add(_message(customer_id, touch, t))
            for rule_id in (a, b, c):
                session.add(
                    JourneyEntry(
                        rule_id=rule_id,
                        rule_version=1,
                        customer_id=customer_id,
                        workflow_id=f"journey/{rule_id}/{customer_id}",
                        run_id="run",
                        entered_at=t - 7 * D,
                    )
                )
        for rule_id in (a, b, c):  # every rule's journey asks; one credit comes of it
            async with sessionmaker() as session, session.begin():
                await attribution_model.credit(
                    session,
                    settings,
                    workflow_id=f"journey/{rule_id}/{customer_id}",
                    run_id="run",
                    order_id=str(order.order_id),
                    customer_id=customer_id,
                    cart_id=None,
                )
    return [a, b, c], expected


async def _credits(api: Api, orders: list[str]) -> tuple[dict[str, str], dict[str, Decimal]]:
    async with api.app.state.sessionmaker() as session:
        rows = list(
            await session.scalars(select(Attribution).where(Attribution.order_id.in_(orders)))
        )
    revenue: dict[str, Decimal] = {}
    for row in rows:
        revenue[str(row.rule_id)] = revenue.get(str(row.rule_id), Decimal(0)) + row.revenue
    return {o: next((str(r.rule_id) for r in rows if r.order_id == o), "none") for o in orders}, (
        revenue
    )


async def _put(api: Api, body: dict[str, Any], key: str = ADMIN_KEY) -> Any:
    return await api.http.put("/v1/analytics/attribution-model", json=body, headers=auth(key))


async def test_three_rules_touch_an_order_and_exactly_one_message_gets_it(
    api: Api, settings: Settings
):
    _, expected = await _history(api, settings, FIRST_DAY)
    credited, revenue = await _credits(api, list(expected))

    assert credited == expected
    async with api.app.state.sessionmaker() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(Attribution)
            .where(Attribution.order_id.in_(list(expected)))
        )
    assert rows == 5  # one row per credited order, however many rules asked
    # What the rules claim adds up to the orders credited, never beyond the shop's revenue.
    shop_revenue = Decimal("4500.00") + Decimal("1200.00") + Decimal("800.00")
    shop_revenue += Decimal("999.50") + Decimal("650.00") + Decimal("300.00")
    assert sum(revenue.values()) == shop_revenue - Decimal("300.00")
    assert sum(revenue.values()) <= shop_revenue


async def test_changing_the_windows_recomputes_past_credit_and_is_audited(
    api: Api, settings: Settings
):
    [a, b, c], expected = await _history(api, settings, SECOND_DAY)
    day = SECOND_DAY.date().isoformat()
    orders = list(expected)
    before = (await api.get("/v1/analytics/attribution-model")).json()

    changed = await _put(
        api,
        {
            "windows": {"email": "P1D", "sms": "PT24H", "whatsapp": "PT24H"},
            "recompute": {"from": day, "to": day},
        },
    )
    credited, revenue = await _credits(api, orders)
    model = (await api.get("/v1/analytics/attribution-model")).json()
    again = await _put(
        api,
        {
            "windows": {"email": "P1D", "sms": "PT24H", "whatsapp": "PT24H"},
            "recompute": {"from": day, "to": day},
        },
    )
    # Newest first: this test's two changes (an earlier test may have audited others).
    trail = (await api.get("/v1/audit?entity=attribution_model")).json()["entries"][:2]
    restored = await _put(api, {"windows": DEFAULT, "recompute": {"from": day, "to": day}})
    back, _ = await _credits(api, orders)

    assert (before["windows"], before["source"], before["changed_at"]) == (
        DEFAULT,
        "settings",
        None,
    )
    assert changed.status_code == 200, changed.text
    # Email credit now lasts a day: A's click 3 days before and C's open 4 days before
    # are out; B's SMS and A's WhatsApp take those orders.
    assert list(credited.values()) == [b, a, b, b, c, "none"]
    assert changed.json()["recomputed"] == {"orders": 6, "moved": 2}
    assert sum(revenue.values()) == Decimal("4500.00") + Decimal("1200.00") + Decimal(
        "800.00"
    ) + Decimal("999.50") + Decimal("650.00")
    assert model["windows"] == {"email": "P1D", "sms": "P1D", "whatsapp": "P1D"}
    assert model["source"] == "api"
    assert model["changed_at"][:19] == changed.json()["changed_at"][:19]
    assert again.json()["recomputed"] == {"orders": 6, "moved": 0}  # idempotent
    assert [e["action"] for e in trail] == ["changed", "changed"]
    entry = trail[1]  # newest first: the first change
    assert entry["action"] == "changed"
    assert entry["details"]["changed_at"][:19] == changed.json()["changed_at"][:19]
    assert entry["details"]["from"] == DEFAULT
    assert entry["details"]["to"] == {"email": "P1D", "sms": "P1D", "whatsapp": "P1D"}
    assert entry["details"]["recomputed"]["orders"] == 6
    assert restored.json()["recomputed"]["moved"] == 2
    assert back == expected


async def test_bad_windows_and_holdouts_are_refused_naming_the_field(api: Api):
    too_long = await _put(api, {"windows": {"email": "P91D"}})
    unknown = await _put(api, {"windows": {"pigeon": "P1D"}})
    backwards = await _put(
        api, {"windows": DEFAULT, "recompute": {"from": "2026-02-02", "to": "2026-02-01"}}
    )
    reader = await api.http.post(
        "/v1/api-keys",
        json={"name": uid("reader"), "scopes": ["analytics:read"]},
        headers=auth(ADMIN_KEY),
    )
    forbidden = await _put(api, {"windows": DEFAULT}, key=reader.json()["key"])
    rule = {
        "name": "too much holdout",
        "trigger": {"event": "customer.created"},
        "steps": [{"send": {"channels": ["email"], "template": "welcome"}}],
    }
    holdout = await api.http.post(
        "/v1/rules", json={**rule, "holdout_percent": 60}, headers=auth(ADMIN_KEY)
    )
    window = await api.http.post(
        "/v1/rules",
        json={**rule, "attribution_windows": {"sms": "PT0S"}},
        headers=auth(ADMIN_KEY),
    )

    assert too_long.status_code == 422
    assert too_long.json()["fields"][0]["loc"] == ["body", "windows"]
    assert "at most 90 days" in too_long.json()["fields"][0]["msg"]
    assert unknown.status_code == 422
    assert unknown.json()["fields"][0]["loc"][:2] == ["body", "windows"]
    assert backwards.status_code == 422
    assert backwards.json()["fields"][0]["loc"] == ["body", "recompute", "from"]
    assert forbidden.status_code == 403
    assert holdout.status_code == 422
    assert holdout.json()["fields"][0]["loc"] == ["body", "holdout_percent"]
    assert "less than or equal to 50" in holdout.json()["fields"][0]["msg"]
    assert window.status_code == 422
    assert window.json()["fields"][0]["loc"] == ["body", "attribution_windows"]
    assert "longer than zero" in window.json()["fields"][0]["msg"]
