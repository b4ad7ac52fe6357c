"""A known shop history for the dashboard tests: one split cart rule whose journeys,
messages and attributed orders are written as the engine writes them; a welcome rule
holding half its journeys out, whose treated journeys convert more and whose messages
were all held back (suppressed, so the overview's sent figures stay the cart rule's);
payment links; orders in the orders read model in three cities; and (through the API) a
customer with a cart and an order.

``seed(..., at=...)`` writes the same history into another month: the browser test
seeds June 2023, tests/test_dashboard.py August, so that the shop-wide figures of each
are exactly what its test seeded when both run against one database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.experiments import AssignVariantInput
from contracts.order_facts import OrderFacts, SaveOrderInput
from contracts.rules import RuleDefinition
from db.models import Attribution, JourneyEntry, JourneyOrder, Message, PaymentLink
from services.journeys import experiments, rules
from services.orders import read_model
from tests.factories import customer, item, uid
from tests.test_split_assignment import split_rule

# A June of the past that no other test writes into: the overview's shop-wide figures
# for it are exactly what this module seeds, whatever else the test database holds.
YESTERDAY = datetime(2023, 6, 14, 9, 0, tzinfo=UTC)
PERIOD = {"from": "2023-06-01", "to": "2023-06-30"}
# tests/test_dashboard.py's month, which no other test writes into either.
AUGUST = datetime(2023, 8, 14, 9, 0, tzinfo=UTC)
AUGUST_PERIOD = {"from": "2023-08-01", "to": "2023-08-31"}


@dataclass
class Seeded:
    rule_id: str
    customer_id: str
    lift_rule_id: str = ""
    # What the overview must show, in PKR.
    attributed: Decimal = Decimal("16500")
    shop_revenue: Decimal = Decimal("20000")
    carts: int = 6
    recovered: int = 3
    sent: dict[str, int] = field(default_factory=dict)
    orders: list[tuple[str, str, Decimal]] = field(default_factory=list)  # attributed


# The welcome rule's journeys: (held out, journeys, converted), each conversion PKR 2,000.
LIFT_GROUPS = [(False, 40, 14), (True, 40, 6)]
# Its treated journeys' messages never sent: (channel, reason) for the first three.
HELD_BACK = [(None, "consent"), (None, "consent"), ("email", "frequency_cap")]
# Orders placed in the month: (city, postal code, payment type, status, how many), 1,000
# PKR each. Karachi and Lahore have the 20 delivered-or-returned parcels a place needs to
# be ranked (MIN_PLACE_ORDERS); Islamabad does not.
ORDERS = [
    ("Karachi", "74000", "cod", "delivered", 12),
    ("Karachi", "74000", "cod", "rto", 6),
    ("Karachi", "74000", "prepaid", "delivered", 4),
    ("Lahore", "54000", "partial_cod", "delivered", 10),
    ("Lahore", "54000", "partial_cod", "rto", 2),
    ("Lahore", "54000", "prepaid", "delivered", 8),
    ("Lahore", "54000", "prepaid", "cancelled", 1),
    ("Islamabad", "44000", "cod", "rto", 3),
]

# variant, converted (revenue), message status
JOURNEYS: list[tuple[str, Decimal | None, str]] = [
    ("a", Decimal("9000"), "opened"),
    ("a", Decimal("4500"), "clicked"),
    ("a", None, "delivered"),
    ("a", None, "bounced"),
    ("b", Decimal("3000"), "delivered"),
    ("b", None, "sent"),
]


def events(seeded: Seeded) -> list[dict[str, Any]]:
    """The customer's cart (now: it starts a cart workflow) and the shop's orders of the
    seeded June: the three the rule was credited with and one it had no part in, 20,000
    PKR in all (too old to start anything, kept as facts)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    cart = {
        "id": uid("evt"),
        "type": "cart.updated",
        "occurred_at": now,
        "customer": customer(seeded.customer_id, name="Ayesha Khan"),
        "data": {"cart_id": uid("cart"), "currency": "PKR", "items": [item()]},
    }
    at = (YESTERDAY + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    orders = [
        {
            "id": uid("evt"),
            "type": "order.placed",
            "occurred_at": at,
            "customer": customer(who),
            "data": {
                "order_id": order_id,
                "items": [item(unit_price=str(total))],
                "total": str(total),
                "currency": "PKR",
                "payment_type": "prepaid",
                "payment_status": "fully_paid",
            },
        }
        for order_id, who, total in [*seeded.orders, (uid("ord"), uid("c"), Decimal("3500"))]
    ]
    return [cart, *orders]


def welcome_rule() -> RuleDefinition:
    return RuleDefinition.model_validate(
        {
            "name": "Welcome",
            "trigger": {"event": "customer.created"},
            # Active, but no customer of another test enters it: tests share the database.
            "conditions": {"field": "customer.id", "op": "eq", "value": uid("nobody")},
            "steps": [{"send": {"channels": ["email"], "template": "welcome"}}],
            "holdout_percent": 50,
        }
    )


async def seed(
    sessionmaker: async_sessionmaker[AsyncSession], customer_id: str, at: datetime = YESTERDAY
) -> Seeded:
    definition = RuleDefinition.model_validate(split_rule(uid("nobody")) | {"name": "Cart rescue"})
    async with sessionmaker() as session, session.begin():
        rule, _ = await rules.create(
            session, definition, rules.Actor(key_id=None, name="tests"), status="active"
        )
        seeded = Seeded(rule_id=rule.id, customer_id=customer_id)
        for n, (variant, revenue, status) in enumerate(JOURNEYS):
            who = customer_id if n == 0 else uid("c")
            cart = uid("cart")
            workflow_id = f"cart/{cart}"
            session.add(
                JourneyEntry(
                    rule_id=rule.id,
                    rule_version=1,
                    customer_id=who,
                    workflow_id=workflow_id,
                    cart_id=cart,
                    variant=variant,
                    entered_at=at,
                    exited_at=at if revenue else None,
                    exit_reason="converted" if revenue else None,
                )
            )
            await session.flush()
            # The split's choice, recorded as the journey's activity records it.
            await experiments.assign_all(
                session,
                [
                    AssignVariantInput(
                        rule_id=rule.id,
                        rule_version=1,
                        path="0",
                        customer_id=who,
                        workflow_id=workflow_id,
                        run_id="run",
                        variants=[("a", 50), ("b", 50)],
                        bucket=0 if variant == "a" else 99,
                    )
                ],
            )
            channel = "email" if variant == "a" else "sms"
            reached = status in ("delivered", "opened", "clicked")
            message = Message(
                key=f"{workflow_id}/0.{variant}.0",
                customer_id=who,
                channel=channel,
                template="cart_reminder_1",
                kind="marketing",
                status=status,
                to="ayesha@example.com" if channel == "email" else "+923001234567",
                subject="Forgot something? Your cart is waiting!" if channel == "email" else None,
                body="Your cart is waiting",
                rule_id=rule.id,
                rule_version=1,
                step=f"0.{variant}.0",
                workflow_id=workflow_id,
                cart_id=cart,
                details={"variant": variant},
                sent_at=at,
                delivered_at=at if reached else None,
                opened_at=at if status in ("opened", "clicked") else None,
                clicked_at=at if status == "clicked" else None,
                created_at=at + timedelta(minutes=n),
            )
            session.add(message)
            seeded.sent[channel] = seeded.sent.get(channel, 0) + 1
            await session.flush()
            if revenue:
                order_id = uid("ord")
                seeded.orders.append((order_id, who, revenue))
                session.add(
                    Attribution(
                        order_id=order_id,
                        customer_id=who,
                        cart_id=cart,
                        message_id=message.id,
                        rule_id=rule.id,
                        rule_version=1,
                        step=f"0.{variant}.0",
                        variant=variant,
                        channel=channel,
                        revenue=revenue,
                        currency="PKR",
                        discount=revenue / 20,
                        ordered_at=at + timedelta(hours=2),
                    )
                )
        for n, (purpose, amount, paid_after) in enumerate(
            [
                ("upfront", Decimal("450"), timedelta(minutes=30)),
                ("upfront", Decimal("900"), None),
                ("prepaid", Decimal("5000"), timedelta(hours=2)),
            ]
        ):
            session.add(
                PaymentLink(
                    reference=uid("pl")[:40],
                    order_id=uid("ord"),
                    purpose=purpose,
                    provider="sandbox",
                    amount=amount,
                    currency="PKR",
                    status="paid" if paid_after else "created",
                    expire_at=at + timedelta(days=2),
                    created_at=at + timedelta(minutes=n),
                    paid_at=at + timedelta(minutes=n) + paid_after if paid_after else None,
                )
            )
        seeded.lift_rule_id = await _welcome(session, at)
        await _orders(session, at)
    return seeded


async def _welcome(session: AsyncSession, at: datetime) -> str:
    """The welcome rule's journeys, treated and held out, and their goal orders."""
    rule, _ = await rules.create(
        session, welcome_rule(), rules.Actor(key_id=None, name="tests"), status="active"
    )
    for holdout, journeys, converted in LIFT_GROUPS:
        for n in range(journeys):
            who = uid("c_welcome")
            workflow_id = f"journey/{rule.id}/{who}"
            entry = JourneyEntry(
                rule_id=rule.id,
                rule_version=1,
                customer_id=who,
                workflow_id=workflow_id,
                run_id="run",
                holdout=holdout,
                entered_at=at,
                exited_at=at + timedelta(hours=1),
                exit_reason="completed",
            )
            session.add(entry)
            await session.flush()
            if n < converted:
                session.add(
                    JourneyOrder(
                        entry_id=entry.id,
                        order_id=uid("ord"),
                        customer_id=who,
                        revenue=Decimal("2000"),
                        currency="PKR",
                        ordered_at=at + timedelta(hours=3),
                        converted=True,
                    )
                )
            if not holdout and n < len(HELD_BACK):
                channel, reason = HELD_BACK[n]
                session.add(
                    Message(
                        key=f"{workflow_id}/0",
                        customer_id=who,
                        channel=channel,
                        template="welcome",
                        kind="marketing",
                        status="suppressed",
                        reason=f"held back: {reason}",
                        rule_id=rule.id,
                        rule_version=1,
                        step="0",
                        workflow_id=workflow_id,
                        details={"suppressed": reason},
                        created_at=at + timedelta(minutes=n),
                    )
                )
    return rule.id


async def _orders(session: AsyncSession, at: datetime) -> None:
    """The month's orders, as the order workflow writes them to the read model."""
    for city, postal_code, payment_type, status, count in ORDERS:
        for n in range(count):
            placed = at + timedelta(minutes=n)
            later = placed + timedelta(days=2)
            facts = OrderFacts(
                order_id=uid("ord"),
                customer_id=uid("c"),
                payment_type=payment_type,
                placed_payment_type=payment_type,
                status=status,
                payment_status="fully_paid" if payment_type == "prepaid" else "pending",
                currency="PKR",
                total=Decimal("1000.00"),
                city=city,
                postal_code=postal_code,
                placed_at=placed,
                cancelled_at=later if status == "cancelled" else None,
                delivered_at=later if status in ("delivered", "rto") else None,
                rto_at=later + timedelta(days=1) if status == "rto" else None,
            )
            written = SaveOrderInput(facts=facts, version=1, updated_at=placed)
            assert await read_model.save(session, written)
