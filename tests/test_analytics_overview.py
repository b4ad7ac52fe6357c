"""GET /v1/analytics/overview on a known history: the shop's own order revenue beside what
Sutra is credited with, carts recovered, messages per channel per day, deliverability and
unsubscribes, with days counted in the shop's time zone and rehearsals left out."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from db.models import (
    Attribution,
    ConsentChange,
    Customer,
    Event,
    JourneyEntry,
    Message,
    MessageEvent,
    Suppression,
)
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import archived_rule, uid

PERIOD = "from=2020-03-01&to=2020-03-03"


def z(text: str, year: int = 2020) -> datetime:
    """A UTC instant in ``year`` (a leap year: the history has a 29 February); the shop is
    in Karachi (UTC+5), so 19:00Z is already the next day. Tests share a database, so each
    builds its history in a year of its own."""
    return datetime.fromisoformat(text.replace("2020-", f"{year}-")).replace(tzinfo=UTC)


@pytest.fixture
async def shop_api(
    database_url: str, dev_server: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        shop_timezone="Asia/Karachi",
    )
    api, manager = await start_api(settings)
    yield api
    await api.http.aclose()
    await manager.__aexit__(None, None, None)


class History:
    def __init__(self, year: int) -> None:
        self.year = year
        self.rows: list[Any] = []
        self.rule = uid("rule")
        self.ids: dict[str, str] = {}

    def z(self, text: str) -> datetime:
        return z(text, self.year)

    def id(self, name: str) -> str:
        return self.ids.setdefault(name, uid(name))

    def order(self, name: str, at: str, total: str, currency: str, event: str = "") -> None:
        payload = {
            "type": "order.placed",
            "data": {"order_id": self.id(name), "total": total, "currency": currency},
        }
        raw = json.dumps(payload).encode()
        self.rows.append(
            Event(
                id=uid(f"evt{event}"),
                type="order.placed",
                occurred_at=self.z(at),
                order_id=self.id(name),
                customer_id=self.id("c1"),
                payload=payload,
                payload_sha256=hashlib.sha256(raw).hexdigest(),
            )
        )

    def message(self, channel: str, sent: str, workflow: str = "", **values: Any) -> uuid.UUID:
        message_id = uuid.uuid4()
        self.rows.append(
            Message(
                id=message_id,
                key=uid("key"),
                customer_id=self.id("c1"),
                channel=channel,
                template="cart_reminder",
                kind="marketing",
                status=values.pop("status", "sent"),
                rule_id=self.rule,
                rule_version=1,
                workflow_id=workflow or f"cart/{uid('k')}",
                sent_at=self.z(sent),
                **values,
            )
        )
        return message_id

    def entry(self, cart: str, entered: str, exit_reason: str | None, test: bool = False) -> None:
        self.rows.append(
            JourneyEntry(
                rule_id=self.rule,
                rule_version=1,
                customer_id=self.id("c1"),
                workflow_id=f"cart/{self.id(cart)}",
                cart_id=self.id(cart),
                test=test,
                entered_at=self.z(entered),
                exited_at=None if exit_reason is None else self.z(entered),
                exit_reason=exit_reason,
            )
        )


async def _build(sessionmaker: async_sessionmaker[AsyncSession], year: int = 2020) -> History:
    h = History(year)
    at = h.z("2020-01-01T00:00")
    customers = [Customer(id=h.id(c), first_seen_at=at) for c in ("c1", "c2")]
    rule = archived_rule(h.rule, "Cart recovery")
    # Orders as the shop reported them.
    h.order("o1", "2020-03-01T05:00", "1000.00", "INR")  # 10:00 on 1 March in Karachi
    h.order("o2", "2020-03-02T18:30", "500.00", "INR")  # 23:30 on 2 March
    h.order("o2", "2020-03-02T18:40", "500.00", "INR", event="again")  # reported twice
    h.order("o3", "2020-03-02T19:30", "40.00", "USD")  # 00:30 on 3 March
    h.order("o4", "2020-03-03T19:10", "70.00", "INR")  # 4 March: outside
    h.order("o5", "2020-02-29T18:50", "90.00", "INR")  # 29 February: outside
    # Messages sent.
    m1 = h.message("email", "2020-03-01T04:00", delivered_at=h.z("2020-03-01T04:01"))
    h.message("email", "2020-03-02T04:00", status="bounced")
    m3 = h.message("sms", "2020-03-02T20:00", delivered_at=h.z("2020-03-02T20:01"))
    m4 = h.message("email", "2020-03-01T06:00", delivered_at=h.z("2020-03-01T06:01"))
    rehearsal = f"cart/{h.id('ktest')}"
    m_test = h.message("sms", "2020-03-02T05:00", workflow=rehearsal)
    h.message("email", "2020-03-03T19:30")  # 4 March: outside
    # Never sent: one failed, one held back (asked for on 2 March), one outside the period.
    for status, created in (
        ("failed", "2020-03-02T06:00"),
        ("suppressed", "2020-03-02T06:00"),
        ("suppressed", "2020-03-03T20:00"),
    ):
        h.rows.append(
            Message(
                key=uid("key"),
                customer_id=h.id("c1"),
                channel="whatsapp",
                template="cart_reminder",
                kind="marketing",
                status=status,
                workflow_id=f"cart/{uid('k')}",
                created_at=h.z(created),
            )
        )
    for reason, created in (
        ("bounce", "2020-03-01T08:00"),
        ("unsubscribe", "2020-03-02T08:00"),
        ("unsubscribe", "2020-03-02T09:00"),
        ("stop", "2020-03-05T08:00"),
    ):
        h.rows.append(
            Suppression(
                channel="email",
                address=f"{uid('a')}@example.com",
                scope="all",
                reason=reason,
                source="sendgrid",
                created_at=h.z(created),
            )
        )
    h.rows.append(
        MessageEvent(
            message_id=m4,
            provider="sendgrid",
            provider_event_id=uid("sg"),
            status="spamreport",
            occurred_at=h.z("2020-03-01T07:00"),
            payload={},
        )
    )
    # Cart journeys: one recovered, one expired, one running, one rehearsal.
    h.entry("k1", "2020-03-01T03:00", "converted")
    h.entry("k2", "2020-03-02T03:00", "expired")
    h.entry("k3", "2020-03-03T03:00", None)
    h.entry("ktest", "2020-03-02T04:00", "converted", test=True)
    # Credit: o1 to the recovered cart's email, o3 to a text, o2 to a rehearsal (left out).
    for order, message, total, currency, cart in (
        ("o1", m1, "1000.00", "INR", h.id("k1")),
        ("o3", m3, "40.00", "USD", None),
        ("o2", m_test, "500.00", "INR", h.id("ktest")),
    ):
        h.rows.append(
            Attribution(
                order_id=h.id(order),
                customer_id=h.id("c1"),
                cart_id=cart,
                message_id=message,
                rule_id=h.rule,
                rule_version=1,
                channel="email",
                revenue=Decimal(total),
                currency=currency,
                ordered_at=h.z("2020-03-01T05:00") if order == "o1" else h.z("2020-03-02T19:30"),
            )
        )
    # Consent withdrawn: c1 by email twice (counted once), c2 by SMS; c2 opts in to email.
    for customer, channel, granted, previous, when in (
        ("c1", "email", False, True, "2020-03-02T10:00"),
        ("c1", "email", False, False, "2020-03-03T10:00"),
        ("c2", "sms", False, None, "2020-03-01T10:00"),
        ("c2", "email", True, None, "2020-03-01T10:00"),
    ):
        h.rows.append(
            ConsentChange(
                customer_id=h.id(customer),
                channel=channel,
                granted=granted,
                previous=previous,
                source="unsubscribe_link",
                occurred_at=h.z(when),
            )
        )
    async with sessionmaker() as session, session.begin():
        session.add_all([*customers, *rule])
        await session.flush()
        session.add_all(h.rows)
    return h


async def test_the_overview_of_a_known_history(
    shop_api: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    h = await _build(sessionmaker)

    response = await shop_api.get(f"/v1/analytics/overview?{PERIOD}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"] == {"from": "2020-03-01", "to": "2020-03-03", "time_zone": "Asia/Karachi"}
    assert body["revenue"] == {
        "orders": 3,
        "order_revenue": {"INR": "1500.00", "USD": "40.00"},
        "attributed_orders": 2,
        "attributed_revenue": {"INR": "1000.00", "USD": "40.00"},
        "attributed_share": {"INR": pytest.approx(2 / 3), "USD": 1.0},
    }
    assert body["carts"] == {
        "abandoned_journeys": 3,
        "recovered": 1,
        "recovery_rate": pytest.approx(1 / 3),
        "recovered_revenue": {"INR": "1000.00"},
    }
    assert body["deliverability"] == {
        "email": {
            "sent": 3,
            "delivered": 2,
            "bounced": 1,
            "complaints": 1,
            "bounce_rate": pytest.approx(1 / 3),
            "complaint_rate": pytest.approx(1 / 3),
            "failed": 0,
            "suppressed": 0,
        },
        "sms": {
            "sent": 1,
            "delivered": 1,
            "bounced": 0,
            "complaints": 0,
            "bounce_rate": 0.0,
            "complaint_rate": 0.0,
            "failed": 0,
            "suppressed": 0,
        },
        "whatsapp": {
            "sent": 0,
            "delivered": 0,
            "bounced": 0,
            "complaints": 0,
            "bounce_rate": None,
            "complaint_rate": None,
            "failed": 1,
            "suppressed": 1,
        },
    }
    assert body["unsubscribes"] == {"email": 1, "sms": 1, "whatsapp": 0}
    assert body["suppressions"] == {"bounce": 1, "unsubscribe": 2}
    assert body["days"] == [
        {
            "date": "2020-03-01",
            "messages": {"email": 2, "sms": 0, "whatsapp": 0},
            "order_revenue": {"INR": "1000.00"},
            "attributed_revenue": {"INR": "1000.00"},
        },
        {
            "date": "2020-03-02",
            "messages": {"email": 1, "sms": 0, "whatsapp": 0},
            "order_revenue": {"INR": "500.00"},
            "attributed_revenue": {},
        },
        {
            "date": "2020-03-03",
            "messages": {"email": 0, "sms": 1, "whatsapp": 0},
            "order_revenue": {"USD": "40.00"},
            "attributed_revenue": {"USD": "40.00"},
        },
    ]

    # Journeys running is now, not the period: ending the running cart journey takes one off.
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(JourneyEntry)
            .where(JourneyEntry.cart_id == h.id("k3"))
            .values(exited_at=z("2020-03-03T04:00"), exit_reason="expired")
        )
    after = (await shop_api.get(f"/v1/analytics/overview?{PERIOD}")).json()
    assert after["journeys_running"] == body["journeys_running"] - 1


async def test_the_overview_as_csv_is_one_row_per_day(
    shop_api: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    await _build(sessionmaker, year=2024)

    response = await shop_api.http.get(
        "/v1/analytics/overview?from=2024-03-01&to=2024-03-03",
        headers={**auth(ADMIN_KEY), "Accept": "text/csv"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "overview-2024-03-01-2024-03-03.csv" in response.headers["content-disposition"]
    assert response.text.splitlines() == [
        "date,sent_email,sent_sms,sent_whatsapp,order_revenue_INR,attributed_revenue_INR,"
        "order_revenue_USD,attributed_revenue_USD",
        "2024-03-01,2,0,0,1000.00,1000.00,0.00,0.00",
        "2024-03-02,1,0,0,500.00,0.00,0.00,0.00",
        "2024-03-03,0,1,0,0.00,0.00,40.00,40.00",
    ]


async def test_an_overview_backwards_in_time_is_refused_naming_from(shop_api: Api):
    response = await shop_api.get("/v1/analytics/overview?from=2020-03-05&to=2020-03-01")

    assert response.status_code == 422
    assert response.json()["fields"] == [
        {"loc": ["query", "from"], "msg": "must not be after to (2020-03-01)"}
    ]
