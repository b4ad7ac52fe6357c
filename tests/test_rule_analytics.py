"""What a rule earned over a period, per version, variant, step and channel: a known history
(two versions, two variants, two steps, every status and suppression reason, exits, orders
in two currencies, an unsubscribe and a spam complaint) and every figure it must show, as
JSON and as CSV, read by send date and by event date, in the shop's own days."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from contracts.events import EVENT_ADAPTER
from contracts.rules import RuleDefinition
from db.models import Attribution, JourneyEntry, Message
from services.customers import profiles
from services.journeys import rules
from services.messaging import unsubscribe
from services.messaging.provider_events import apply_sendgrid_events
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import cart_updated, uid

ACTOR = rules.Actor(key_id=None, name="tests")
COSTS = {
    "email": {"PKR": "1.00"},
    "sms": {"PKR": "2.50"},
    "whatsapp": {"PKR": "4.00", "USD": "0.05"},
}
T = datetime(2026, 11, 10, 6, 0, tzinfo=UTC)  # 11:00 in Karachi, well inside November
PERIOD = "from=2026-11-01&to=2026-11-30"  # the shop's November: Asia/Karachi, UTC+5
OCT_31_LATE = datetime(2026, 10, 31, 18, 30, tzinfo=UTC)  # 23:30 on 31 October in Karachi
NOV_1_EARLY = datetime(2026, 10, 31, 19, 30, tzinfo=UTC)  # 00:30 on 1 November in Karachi
DEC_1_EARLY = datetime(2026, 11, 30, 19, 30, tzinfo=UTC)  # 00:30 on 1 December in Karachi


def _send(channels: list[str]) -> dict[str, Any]:
    return {"send": {"channels": channels, "template": "cart_reminder_1"}}


V1 = {
    "name": "Cart rescue",
    "trigger": {"event": "cart.abandoned", "after": "PT1H"},
    "conditions": {"field": "customer.id", "op": "eq", "value": "nobody"},
    "steps": [
        {
            "split": [
                {
                    "weight": 50,
                    "name": "a",
                    "steps": [_send(["email"]), {"wait": "PT1H"}, _send(["email", "sms"])],
                },
                {
                    "weight": 50,
                    "name": "b",
                    "steps": [_send(["sms"]), {"wait": "PT1H"}, _send(["sms"])],
                },
            ]
        }
    ],
}
V2 = {**V1, "steps": [_send(["email"]), {"wait": "PT1H"}, _send(["whatsapp"])]}


@pytest.fixture
async def shop(
    database_url: str, dev_server: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        shop_timezone="Asia/Karachi",
        message_costs=COSTS,
    )
    client, manager = await start_api(settings)
    yield client
    await client.http.aclose()
    await manager.__aexit__(None, None, None)


class History:
    """Rows written as the engine writes them, dated where the test needs them."""

    def __init__(self, session: AsyncSession, rule_id: str) -> None:
        self.session = session
        self.rule_id = rule_id
        self.customers: dict[str, str] = {}

    def customer(self, name: str) -> str:
        return self.customers.setdefault(name, uid(name))

    def journey(
        self,
        name: str,
        version: int,
        variant: str | None,
        *,
        run: str = "1",
        entered: datetime = T,
        exit: str | None = None,
        exited: datetime | None = None,
        test: bool = False,
    ) -> str:
        workflow_id = f"cart/{self.rule_id}/{self.customer(name)}/{run}"
        self.session.add(
            JourneyEntry(
                rule_id=self.rule_id,
                rule_version=version,
                customer_id=self.customer(name),
                workflow_id=workflow_id,
                variant=variant,
                run_id=run,
                test=test,
                entered_at=entered,
                exited_at=(exited or T + timedelta(days=2)) if exit else None,
                exit_reason=exit,
            )
        )
        return workflow_id

    async def message(
        self,
        name: str,
        workflow_id: str,
        version: int,
        variant: str | None,
        step: str,
        channel: str | None,
        status: str,
        *,
        at: datetime = T,
        suppressed: str | None = None,
        deferred: str | None = None,
        sent: bool | None = None,
        **stamps: datetime,
    ) -> Message:
        reached = ("sent", "delivered", "opened", "clicked", "bounced")
        went_out = status in reached if sent is None else sent
        details: dict[str, Any] = {"attempt": 1}
        if variant:
            details["variant"] = variant
        if suppressed:
            details["suppressed"] = suppressed
        if deferred:
            details["deferrals"] = [{"reason": deferred, "at": at.isoformat()}]
        minute = timedelta(minutes=1)
        stamp = {
            "delivered_at": at + minute if status in ("delivered", "opened", "clicked") else None,
            "opened_at": at + 2 * minute if status in ("opened", "clicked") else None,
            "clicked_at": at + 3 * minute if status == "clicked" else None,
            "failed_at": at + minute if status in ("bounced", "failed") else None,
            **stamps,
        }
        row = Message(
            key=uid(f"{workflow_id}/{step}"),
            customer_id=self.customer(name),
            channel=channel,
            template="cart_reminder_1",
            kind="marketing",
            status=status,
            # Addresses of their own: the suppressions below must stop no other test's sends.
            to=f"{self.customer(name)}@example.com" if channel == "email" else None,
            rule_id=self.rule_id,
            rule_version=version,
            step=step,
            workflow_id=workflow_id,
            details=details,
            sent_at=at if went_out else None,
            created_at=at,
            updated_at=max([at, *(s for s in stamp.values() if s)]) + timedelta(minutes=10),
            **stamp,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    def order(
        self,
        name: str,
        message: Message,
        revenue: str,
        currency: str,
        discount: str = "0",
        ordered: datetime = T + timedelta(days=1),
    ) -> None:
        self.session.add(
            Attribution(
                order_id=uid("ord"),
                customer_id=self.customer(name),
                message_id=message.id,
                rule_id=self.rule_id,
                rule_version=message.rule_version,
                step=message.step,
                variant=(message.details or {}).get("variant"),
                channel=message.channel,
                revenue=Decimal(revenue),
                currency=currency,
                discount=Decimal(discount),
                ordered_at=ordered,
            )
        )


async def _history(
    sessionmaker: async_sessionmaker[AsyncSession], settings_api: Api
) -> tuple[str, str]:
    """The known history; returns the rule's id and an idle rule's."""
    async with sessionmaker() as session, session.begin():
        rule, _ = await rules.create(session, RuleDefinition.model_validate(V1), ACTOR)
        await rules.update(session, rule.id, RuleDefinition.model_validate(V2), ACTOR)
        idle, _ = await rules.create(
            session, RuleDefinition.model_validate({**V2, "name": "Idle"}), ACTOR
        )
        h = History(session, rule.id)
        a1 = h.journey("a1", 1, "a", exit="converted")
        a1_again = h.journey("a1", 1, "a", run="2")
        a2 = h.journey("a2", 1, "a", exit="unsubscribed")
        a3 = h.journey("a3", 1, "a")
        h.journey("a4", 1, "a", entered=DEC_1_EARLY)  # after the period
        b1 = h.journey("b1", 1, "b", exit="completed")
        b2 = h.journey("b2", 1, "b", exit="expired")
        # Entered in October, ended in November: only event dates see it (its exit).
        h.journey(
            "b3",
            1,
            "b",
            entered=datetime(2026, 10, 20, tzinfo=UTC),
            exit="expired",
            exited=datetime(2026, 11, 5, tzinfo=UTC),
        )
        c1 = h.journey("c1", 2, None, exit="converted")
        c2 = h.journey("c2", 2, None)
        rehearsal = h.journey("t1", 1, "a", test=True)
        await session.flush()

        m1 = await h.message("a1", a1, 1, "a", "0.a.0", "email", "clicked")
        m2 = await h.message("a2", a2, 1, "a", "0.a.0", "email", "delivered")
        await h.message("a3", a3, 1, "a", "0.a.0", "email", "bounced")
        m4 = await h.message("a1", a1_again, 1, "a", "0.a.0", "email", "opened")
        # Sent late on 31 October in Karachi, delivered on 1 November.
        m16 = await h.message(
            "a3",
            a3,
            1,
            "a",
            "0.a.0",
            "email",
            "delivered",
            at=OCT_31_LATE,
            delivered_at=datetime(2026, 11, 1, 0, 0, tzinfo=UTC),
        )
        await h.message("a2", a2, 1, "a", "0.a.0", "email", "sent", at=NOV_1_EARLY)
        m_test = await h.message("t1", rehearsal, 1, "a", "0.a.0", "email", "clicked")
        m5 = await h.message("a1", a1, 1, "a", "0.a.2", "email", "sent")
        await h.message("a3", a3, 1, "a", "0.a.2", None, "suppressed", suppressed="consent")
        await h.message("a2", a2, 1, "a", "0.a.2", "email", "delivered", deferred="quiet_hours")
        await h.message("a3", a3, 1, "a", "0.a.2", "sms", "failed")
        m9 = await h.message("b1", b1, 1, "b", "0.b.0", "sms", "delivered")
        await h.message("b2", b2, 1, "b", "0.b.0", "sms", "suppressed", suppressed="frequency_cap")
        await h.message("b1", b1, 1, "b", "0.b.2", "sms", "sent", deferred="frequency_cap")
        await h.message("b2", b2, 1, "b", "0.b.2", None, "suppressed", suppressed="no_channel")
        m13 = await h.message("c1", c1, 2, None, "0", "email", "delivered")
        await h.message(
            "c2",
            c2,
            2,
            None,
            "0",
            "email",
            "suppressed",
            suppressed="abandoned",
            deferred="quiet_hours",
        )
        m15 = await h.message("c1", c1, 2, None, "2", "whatsapp", "delivered")

        h.order("a1", m1, "9000", "PKR", "450")
        h.order("a1", m5, "3000", "PKR")
        h.order("c1", m15, "120", "USD", "12")
        h.order("c1", m13, "5000", "PKR", "250")
        # Sent in November, ordered in December: the send date counts it, the event date not.
        h.order("b1", m9, "2000", "PKR", ordered=datetime(2026, 12, 2, tzinfo=UTC))
        # Sent in October, ordered in November: the event date counts it, the send date not.
        h.order("a3", m16, "1000", "PKR", ordered=datetime(2026, 11, 2, tzinfo=UTC))
        h.order("t1", m_test, "7000", "PKR")  # a rehearsal's order counts nowhere
        a2_id = h.customer("a2")
        event = EVENT_ADAPTER.validate_python(
            cart_updated(customer_id=a2_id, email=f"{a2_id}@example.com", phone=None)
        )
        await profiles.upsert_from_events(session, [event])
    # a2 unsubscribes through m2's link today (December: after the period); a1 reports m4
    # as spam on 10 November.
    settings = settings_api.app.state.settings
    token = unsubscribe.read_token(
        settings,
        unsubscribe.unsubscribe_url(
            settings, customer_id=a2_id, channel="email", message_id=m2.id
        ).rsplit("/", 1)[1],
    )
    assert token is not None
    async with sessionmaker() as session, session.begin():
        await unsubscribe.opt_out(session, token)
        await apply_sendgrid_events(
            session,
            [
                {
                    "event": "spamreport",
                    "sg_event_id": uid("sg"),
                    "email": f"{h.customer('a1')}@example.com",
                    "timestamp": int((T + timedelta(hours=1)).timestamp()),
                    "sutra_message_id": str(m4.id),
                }
            ],
        )
    return rule.id, idle.id


def _counts(**given: Any) -> dict[str, Any]:
    """A level's counts: the six statuses, suppressed and deferred by reason, unsubscribes
    and complaints; ``suppressed_consent=1``, ``deferred_quiet_hours=1`` name a reason."""
    out: dict[str, Any] = {
        s: given.pop(s, 0) for s in ("sent", "delivered", "opened", "clicked", "bounced", "failed")
    }
    out["suppressed"] = {
        r: given.pop(f"suppressed_{r}", 0)
        for r in ("consent", "no_channel", "frequency_cap", "abandoned")
    }
    out["deferred"] = {r: given.pop(f"deferred_{r}", 0) for r in ("quiet_hours", "frequency_cap")}
    out["unsubscribes"] = given.pop("unsubscribes", 0)
    out["complaints"] = given.pop("complaints", 0)
    assert not given, given
    return out


def _figures(
    counts: dict[str, Any],
    customers: dict[str, Any] | None = None,
    *,
    conversions: int = 0,
    converted: int = 0,
    rate: float | None = None,
    revenue: dict[str, str] | None = None,
    per_recipient: dict[str, str] | None = None,
    discount: dict[str, str] | None = None,
    cost: dict[str, str] | None = None,
    roi: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    customers = customers or counts
    return {
        **counts,
        "customers": customers,
        "recipients": customers["sent"],
        "conversions": conversions,
        "converted_customers": converted,
        "conversion_rate": rate,
        "revenue": revenue or {},
        "revenue_per_recipient": per_recipient or {},
        "discount_cost": discount or {},
        "message_cost": cost or {},
        "roi": roi or {},
    }


A_FIRST_EMAIL = _figures(
    _counts(sent=5, delivered=3, opened=2, clicked=1, bounced=1, unsubscribes=1, complaints=1),
    _counts(sent=3, delivered=2, opened=1, clicked=1, bounced=1, unsubscribes=1, complaints=1),
    conversions=1,
    converted=1,
    rate=1 / 3,
    revenue={"PKR": "9000.0000"},
    per_recipient={"PKR": "3000.0000"},
    discount={"PKR": "450.0000"},
    cost={"PKR": "5.0000"},
    roi={"PKR": 1709.0},  # (9000 - 450 - 5) / 5
)
A_SECOND = {
    "email": _figures(
        _counts(sent=2, delivered=1, deferred_quiet_hours=1),
        conversions=1,
        converted=1,
        rate=0.5,
        revenue={"PKR": "3000.0000"},
        per_recipient={"PKR": "1500.0000"},
        discount={"PKR": "0.0000"},
        cost={"PKR": "2.0000"},
        roi={"PKR": 1499.0},
    ),
    "none": _figures(_counts(suppressed_consent=1)),
    "sms": _figures(_counts(failed=1), cost={"PKR": "0.0000"}, roi={"PKR": None}),
}
A_TOTALS = _figures(
    _counts(
        sent=7,
        delivered=4,
        opened=2,
        clicked=1,
        bounced=1,
        failed=1,
        suppressed_consent=1,
        deferred_quiet_hours=1,
        unsubscribes=1,
        complaints=1,
    ),
    _counts(
        sent=3,
        delivered=2,
        opened=1,
        clicked=1,
        bounced=1,
        failed=1,
        suppressed_consent=1,
        deferred_quiet_hours=1,
        unsubscribes=1,
        complaints=1,
    ),
    conversions=2,
    converted=1,
    rate=0.5,  # 2 orders / 4 journeys entered
    revenue={"PKR": "12000.0000"},
    per_recipient={"PKR": "4000.0000"},
    discount={"PKR": "450.0000"},
    cost={"PKR": "7.0000"},
    roi={"PKR": 1649.0},  # (12000 - 450 - 7) / 7
)
B_STEPS = [
    {
        "step": "0.b.0",
        "totals": (
            b0 := _figures(
                _counts(sent=1, delivered=1, suppressed_frequency_cap=1),
                conversions=1,
                converted=1,
                rate=1.0,
                revenue={"PKR": "2000.0000"},
                per_recipient={"PKR": "2000.0000"},
                discount={"PKR": "0.0000"},
                cost={"PKR": "2.5000"},
                roi={"PKR": 799.0},
            )
        ),
        "channels": {"sms": b0},
    },
    {
        "step": "0.b.2",
        "totals": _figures(
            _counts(sent=1, suppressed_no_channel=1, deferred_frequency_cap=1),
            rate=0.0,
            cost={"PKR": "2.5000"},
            roi={"PKR": -1.0},
        ),
        "channels": {
            "none": _figures(_counts(suppressed_no_channel=1)),
            "sms": _figures(
                _counts(sent=1, deferred_frequency_cap=1),
                rate=0.0,
                cost={"PKR": "2.5000"},
                roi={"PKR": -1.0},
            ),
        },
    },
]
V2_STEPS = [
    {
        "step": "0",
        "totals": (
            c0 := _figures(
                _counts(sent=1, delivered=1, suppressed_abandoned=1, deferred_quiet_hours=1),
                conversions=1,
                converted=1,
                rate=1.0,
                revenue={"PKR": "5000.0000"},
                per_recipient={"PKR": "5000.0000"},
                discount={"PKR": "250.0000"},
                cost={"PKR": "1.0000"},
                roi={"PKR": 4749.0},
            )
        ),
        "channels": {"email": c0},
    },
    {
        "step": "2",
        "totals": (
            c2 := _figures(
                _counts(sent=1, delivered=1),
                conversions=1,
                converted=1,
                rate=1.0,
                revenue={"USD": "120.0000"},
                per_recipient={"USD": "120.0000"},
                discount={"USD": "12.0000"},
                cost={"PKR": "4.0000", "USD": "0.0500"},
                roi={"PKR": -1.0, "USD": 2159.0},  # (120 - 12 - 0.05) / 0.05
            )
        ),
        "channels": {"whatsapp": c2},
    },
]
V2_TOTALS = _figures(
    _counts(sent=2, delivered=2, suppressed_abandoned=1, deferred_quiet_hours=1),
    _counts(sent=1, delivered=1, suppressed_abandoned=1, deferred_quiet_hours=1),
    conversions=2,
    converted=1,
    rate=1.0,
    revenue={"PKR": "5000.0000", "USD": "120.0000"},
    per_recipient={"PKR": "5000.0000", "USD": "120.0000"},
    discount={"PKR": "250.0000", "USD": "12.0000"},
    cost={"PKR": "5.0000", "USD": "0.0500"},
    roi={"PKR": 949.0, "USD": 2159.0},
)
RULE_TOTALS = _figures(
    _counts(
        sent=11,
        delivered=7,
        opened=2,
        clicked=1,
        bounced=1,
        failed=1,
        suppressed_consent=1,
        suppressed_no_channel=1,
        suppressed_frequency_cap=1,
        suppressed_abandoned=1,
        deferred_quiet_hours=2,
        deferred_frequency_cap=1,
        unsubscribes=1,
        complaints=1,
    ),
    _counts(
        sent=5,
        delivered=4,
        opened=1,
        clicked=1,
        bounced=1,
        failed=1,
        suppressed_consent=1,
        suppressed_no_channel=1,
        suppressed_frequency_cap=1,
        suppressed_abandoned=1,
        deferred_quiet_hours=2,
        deferred_frequency_cap=1,
        unsubscribes=1,
        complaints=1,
    ),
    conversions=5,
    converted=3,
    rate=5 / 8,
    revenue={"PKR": "19000.0000", "USD": "120.0000"},
    per_recipient={"PKR": "3800.0000", "USD": "24.0000"},
    discount={"PKR": "700.0000", "USD": "12.0000"},
    cost={"PKR": "17.0000", "USD": "0.0500"},
    roi={"PKR": 1075.4706, "USD": 2159.0},  # (19000 - 700 - 17) / 17
)


async def test_every_figure_per_version_variant_step_and_channel_by_send_date(
    shop: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    rule_id, _ = await _history(sessionmaker, shop)

    response = await shop.get(f"/v1/analytics/rules/{rule_id}?{PERIOD}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"] == {"from": "2026-11-01", "to": "2026-11-30", "time_zone": "Asia/Karachi"}
    assert (body["name"], body["basis"]) == ("Cart rescue", "send")
    # a4 entered on 1 December and b3 in October: outside the shop's November.
    assert (body["entered"], body["entered_customers"]) == (8, 7)
    exits = {"converted": 2, "unsubscribed": 1, "completed": 1, "expired": 1}
    assert body["exited"] == body["exited_customers"] == exits
    assert body["totals"] == RULE_TOTALS

    v1, v2 = body["versions"]
    assert (v1["version"], v1["entered"], v1["entered_customers"]) == (1, 6, 5)
    assert v1["exited"] == {"converted": 1, "unsubscribed": 1, "completed": 1, "expired": 1}
    assert v1["totals"]["conversions"] == 3
    assert v1["totals"]["conversion_rate"] == 0.5
    assert v1["totals"]["roi"] == {"PKR": 1128.1667}  # (14000 - 450 - 12) / 12
    assert v1["totals"]["customers"]["sent"] == 4
    a, b = v1["variants"]
    assert (a["variant"], a["entered"], a["entered_customers"]) == ("a", 4, 3)
    assert a["exited"] == a["exited_customers"] == {"converted": 1, "unsubscribed": 1}
    assert a["totals"] == A_TOTALS
    # The figures the endpoint always had, unchanged in shape.
    assert a["messages"] == {
        "email": {"sent": 7, "delivered": 4, "opened": 2, "clicked": 1, "bounced": 1, "failed": 0},
        "sms": {"sent": 0, "delivered": 0, "opened": 0, "clicked": 0, "bounced": 0, "failed": 1},
    }
    assert (a["conversions"], a["conversion_rate"]) == (2, 0.5)
    assert (a["revenue"], a["discount_cost"]) == ({"PKR": "12000.0000"}, {"PKR": "450.0000"})
    assert [s["step"] for s in a["steps"]] == ["0.a.0", "0.a.2"]
    first, second = a["steps"]
    assert first["channels"] == {"email": A_FIRST_EMAIL}
    assert first["totals"] == A_FIRST_EMAIL
    assert second["channels"] == A_SECOND
    assert second["totals"] == _figures(
        _counts(sent=2, delivered=1, failed=1, suppressed_consent=1, deferred_quiet_hours=1),
        conversions=1,
        converted=1,
        rate=0.5,
        revenue={"PKR": "3000.0000"},
        per_recipient={"PKR": "1500.0000"},
        discount={"PKR": "0.0000"},
        cost={"PKR": "2.0000"},
        roi={"PKR": 1499.0},
    )
    assert set(a["channels"]) == {"email", "none", "sms"}
    assert a["channels"]["email"]["conversion_rate"] == 2 / 3  # per customer it reached

    assert (b["variant"], b["entered"], b["exited"]) == ("b", 2, {"completed": 1, "expired": 1})
    assert b["steps"] == B_STEPS
    assert b["totals"]["roi"] == {"PKR": 399.0}  # (2000 - 5) / 5

    [none] = v2["variants"]
    assert (none["variant"], none["entered"], none["exited"]) == (None, 2, {"converted": 1})
    assert none["steps"] == V2_STEPS
    assert none["totals"] == V2_TOTALS
    assert v2["totals"] == V2_TOTALS


async def test_by_event_date_each_figure_counts_on_the_day_it_happened(
    shop: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    rule_id, _ = await _history(sessionmaker, shop)

    body = (await shop.get(f"/v1/analytics/rules/{rule_id}?{PERIOD}&basis=event")).json()

    assert body["basis"] == "event"
    # b3's October journey ended in November; its entry is not November's.
    assert body["entered"] == 8
    assert body["exited"] == {"converted": 2, "unsubscribed": 1, "completed": 1, "expired": 2}
    totals = body["totals"]
    # The message sent late on 31 October was delivered on 1 November.
    assert (totals["sent"], totals["delivered"]) == (11, 8)
    # The unsubscribe happened today (December); the complaint on 10 November.
    assert (totals["unsubscribes"], totals["complaints"]) == (0, 1)
    # b1's order of 2 December is out; a3's of 2 November (for an October message) is in.
    assert (totals["conversions"], totals["converted_customers"]) == (5, 3)
    assert totals["revenue"] == {"PKR": "18000.0000", "USD": "120.0000"}
    [a, _] = body["versions"][0]["variants"]
    email = a["steps"][0]["channels"]["email"]
    assert (email["sent"], email["delivered"], email["customers"]["delivered"]) == (5, 4, 3)


async def test_the_csv_has_a_row_per_version_variant_step_and_channel(
    shop: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    rule_id, _ = await _history(sessionmaker, shop)

    response = await shop.http.get(
        f"/v1/analytics/rules/{rule_id}?{PERIOD}",
        headers={**_auth(), "Accept": "text/csv"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    keys = [(r["level"], r["version"], r["variant"], r["step"], r["channel"]) for r in rows]
    assert keys == [
        ("variant", "1", "a", "", ""),
        ("step", "1", "a", "0.a.0", "email"),
        ("step", "1", "a", "0.a.2", "email"),
        ("step", "1", "a", "0.a.2", "none"),
        ("step", "1", "a", "0.a.2", "sms"),
        ("variant", "1", "b", "", ""),
        ("step", "1", "b", "0.b.0", "sms"),
        ("step", "1", "b", "0.b.2", "none"),
        ("step", "1", "b", "0.b.2", "sms"),
        ("variant", "2", "", "", ""),
        ("step", "2", "", "0", "email"),
        ("step", "2", "", "2", "whatsapp"),
    ]
    email = rows[1]
    assert {k: email[k] for k in _CSV_CELLS} == {
        "sent": "5",
        "delivered": "3",
        "bounced": "1",
        "customers_sent": "3",
        "unsubscribes": "1",
        "complaints": "1",
        "suppressed_consent": "0",
        "recipients": "3",
        "conversions": "1",
        "revenue_PKR": "9000.0000",
        "revenue_USD": "",
        "revenue_per_recipient_PKR": "3000.0000",
        "discount_cost_PKR": "450.0000",
        "message_cost_PKR": "5.0000",
        "roi_PKR": "1709.0",
        "entered": "",
    }
    assert (rows[3]["suppressed_consent"], rows[3]["sent"]) == ("1", "0")
    assert (rows[0]["entered"], rows[0]["entered_customers"], rows[0]["sent"]) == ("4", "3", "7")
    assert (rows[0]["exited_converted"], rows[0]["exited_expired"]) == ("1", "0")
    assert rows[11]["roi_USD"] == "2159.0"


_CSV_CELLS = (
    "sent",
    "delivered",
    "bounced",
    "customers_sent",
    "unsubscribes",
    "complaints",
    "suppressed_consent",
    "recipients",
    "conversions",
    "revenue_PKR",
    "revenue_USD",
    "revenue_per_recipient_PKR",
    "discount_cost_PKR",
    "message_cost_PKR",
    "roi_PKR",
    "entered",
)


def _auth() -> dict[str, str]:
    return auth(ADMIN_KEY)


async def test_every_rule_with_its_key_figures_json_and_csv(
    shop: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    rule_id, idle_id = await _history(sessionmaker, shop)

    response = await shop.get(f"/v1/analytics/rules?{PERIOD}")

    assert response.status_code == 200, response.text
    listed = {r["rule_id"]: r for r in response.json()["rules"]}
    assert listed[rule_id] == {
        "rule_id": rule_id,
        "name": "Cart rescue",
        "status": "draft",
        "version": 2,
        "entered": 8,
        "sent": 11,
        "conversions": 5,
        "conversion_rate": 0.625,
        "revenue": RULE_TOTALS["revenue"],
        "discount_cost": RULE_TOTALS["discount_cost"],
        "message_cost": RULE_TOTALS["message_cost"],
        "roi": RULE_TOTALS["roi"],
    }
    idle = listed[idle_id]
    assert (idle["entered"], idle["sent"], idle["conversions"]) == (0, 0, 0)
    assert (idle["conversion_rate"], idle["revenue"], idle["roi"]) == (None, {}, {})

    exported = await shop.http.get(
        f"/v1/analytics/rules?{PERIOD}", headers={**_auth(), "Accept": "text/csv"}
    )
    rows = {r["rule_id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
    mine = rows[rule_id]
    assert (mine["entered"], mine["sent"], mine["conversions"]) == ("8", "11", "5")
    assert (mine["revenue_PKR"], mine["revenue_USD"], mine["roi_PKR"]) == (
        "19000.0000",
        "120.0000",
        "1075.4706",
    )
    assert (rows[idle_id]["revenue_PKR"], rows[idle_id]["conversion_rate"]) == ("", "")


async def test_a_period_that_ends_before_it_starts_is_refused_naming_from(shop: Api):
    rule_id = await _idle_rule(shop)
    for path in (f"/v1/analytics/rules/{rule_id}", "/v1/analytics/rules"):
        response = await shop.get(f"{path}?from=2026-11-30&to=2026-11-01")
        assert response.status_code == 422, response.text
        assert response.json()["fields"][0]["loc"] == ["query", "from"]
    for query, field in (("from=0001-01-01", "from"), ("to=9999-12-31", "to")):
        edge = await shop.get(f"/v1/analytics/rules/{rule_id}?{query}")
        assert edge.status_code == 422, edge.text
        assert edge.json()["fields"][0]["loc"] == ["query", field]
    wrong = await shop.get(f"/v1/analytics/rules/{rule_id}?basis=ordered")
    assert wrong.status_code == 422
    assert wrong.json()["fields"][0]["loc"] == ["query", "basis"]
    missing = await shop.get("/v1/analytics/rules/rule_nope")
    assert missing.status_code == 404


async def _idle_rule(shop: Api) -> str:
    created = await shop.http.post("/v1/rules", json=V2, headers=_auth())
    assert created.status_code == 201, created.text
    return str(created.json()["id"])
