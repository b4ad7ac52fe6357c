"""A/B test verdicts on real PostgreSQL, and the rule analytics marketers read them in."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.experiments import AssignVariantInput
from contracts.rules import RuleDefinition
from db.models import Attribution, Experiment, JourneyEntry, Message, SplitAssignment
from services.journeys import experiments, rules
from tests.conftest import ADMIN_KEY, Api
from tests.factories import uid
from tests.test_split_assignment import split_rule
from workflows.journey_split import split_bucket

ACTOR = rules.Actor(key_id=None, name="tests")
NOW = datetime(2026, 3, 1, tzinfo=UTC)
BUCKETS = {"a": 0, "b": 99}  # a customer in bucket 0 takes a, in bucket 99 takes b


async def _rule(
    sessionmaker: async_sessionmaker[AsyncSession], **experiment: Any
) -> tuple[str, RuleDefinition]:
    definition = split_rule(uid("nobody"))  # active, but no real customer enters it
    definition["experiment"] = experiment
    parsed = RuleDefinition.model_validate(definition)
    async with sessionmaker() as session, session.begin():
        rule, _ = await rules.create(session, parsed, ACTOR, status="active")
    return rule.id, parsed


def _journey(rule_id: str, customer_id: str, bucket: int, run: str = "run") -> AssignVariantInput:
    return AssignVariantInput(
        rule_id=rule_id,
        rule_version=1,
        path="0",
        customer_id=customer_id,
        workflow_id=f"cart/{customer_id}",
        run_id=run,
        variants=[("a", 50), ("b", 50)],
        bucket=bucket,
    )


async def _seed(
    sessionmaker: async_sessionmaker[AsyncSession],
    rule_id: str,
    results: dict[str, tuple[int, int]],
) -> None:
    """``journeys`` customers take each variant (through the real assignment), and
    ``conversions`` of them place an order credited to it."""
    async with sessionmaker() as session, session.begin():
        for variant, (journeys, conversions) in results.items():
            customers = [uid("c") for _ in range(journeys)]
            taken = await experiments.assign_all(
                session, [_journey(rule_id, c, BUCKETS[variant]) for c in customers]
            )
            assert {t.variant for t in taken} == {variant}
            session.add_all(
                Attribution(
                    order_id=uid("ord"),
                    customer_id=c,
                    rule_id=rule_id,
                    rule_version=1,
                    step=f"0.{variant}.0",
                    variant=variant,
                    channel="email",
                    revenue=Decimal("4500"),
                    currency="PKR",
                    ordered_at=NOW,
                )
                for c in customers[:conversions]
            )


async def _evaluate(sessionmaker: async_sessionmaker[AsyncSession], rule_id: str) -> Experiment:
    async with sessionmaker() as session, session.begin():
        await experiments.evaluate_experiments(session, NOW)
    async with sessionmaker() as session:
        experiment = await session.get(Experiment, (rule_id, 1, "0"))
    assert experiment is not None
    return experiment


def _p(experiment: Experiment, variant: str) -> float | None:
    [row] = [v for v in experiment.result["variants"] if v["name"] == variant]
    return row["p_value"]


def test_the_z_test_matches_the_textbook():
    # 10% vs 14% of 1,200 each: z = 3.015, two-sided p = 0.0026.
    assert experiments.p_value(168, 1200, 120, 1200) == pytest.approx(0.00257, abs=2e-4)
    assert experiments.p_value(126, 1200, 120, 1200) == pytest.approx(0.69, abs=0.01)
    assert experiments.p_value(0, 100, 0, 100) == 1.0


async def test_a_clear_difference_over_enough_journeys_declares_a_winner(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    rule_id, _ = await _rule(sessionmaker)
    await _seed(sessionmaker, rule_id, {"a": (1200, 120), "b": (1200, 168)})

    experiment = await _evaluate(sessionmaker, rule_id)

    assert (experiment.status, experiment.winner, experiment.promoted) == ("decided", "b", False)
    assert experiment.decided_at == NOW
    assert _p(experiment, "a") == pytest.approx(0.0026, abs=2e-4)
    figures = {v["name"]: (v["journeys"], v["conversions"]) for v in experiment.result["variants"]}
    assert figures == {"a": (1200, 120), "b": (1200, 168)}
    assert experiment.result["variants"][1]["revenue"] == {"PKR": "756000.0000"}

    # Not promoted: a new customer whose bucket is a's still takes a.
    async with sessionmaker() as session, session.begin():
        taken = await experiments.assign(session, _journey(rule_id, uid("c"), BUCKETS["a"]))
    assert (taken.variant, taken.reason) == ("a", "bucket")

    # Decided stays decided, whatever the later figures say.
    await _seed(sessionmaker, rule_id, {"a": (300, 300)})  # a now converts best
    async with sessionmaker() as session, session.begin():
        await experiments.evaluate_experiments(session, NOW + timedelta(hours=1))
    again = await _evaluate(sessionmaker, rule_id)
    assert (again.status, again.winner, again.decided_at) == ("decided", "b", NOW)


async def test_a_small_difference_declares_no_winner(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    rule_id, _ = await _rule(sessionmaker)
    await _seed(sessionmaker, rule_id, {"a": (1200, 120), "b": (1200, 126)})

    experiment = await _evaluate(sessionmaker, rule_id)

    assert (experiment.status, experiment.winner) == ("running", None)
    assert experiment.result["best"] == "b"
    assert _p(experiment, "a") == pytest.approx(0.69, abs=0.01)


async def test_too_few_journeys_declare_no_winner_even_with_a_big_difference(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    rule_id, _ = await _rule(sessionmaker)  # min_sample 1,000 per variant
    await _seed(sessionmaker, rule_id, {"a": (999, 100), "b": (1500, 450)})

    experiment = await _evaluate(sessionmaker, rule_id)

    assert (experiment.status, experiment.winner) == ("running", None)
    assert experiment.result["sampled"] is False
    p_a = _p(experiment, "a")
    assert p_a is not None
    assert p_a < 1e-6  # significant, but a has not reached its sample


async def test_a_promoted_winner_takes_every_new_journey_but_not_those_already_split(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    rule_id, _ = await _rule(sessionmaker, send_all_to_winner=True, min_sample=100)
    await _seed(sessionmaker, rule_id, {"a": (300, 30), "b": (300, 60)})
    early = uid("c")
    async with sessionmaker() as session, session.begin():
        before = await experiments.assign(session, _journey(rule_id, early, BUCKETS["a"]))
    assert before.variant == "a"

    experiment = await _evaluate(sessionmaker, rule_id)
    assert (experiment.status, experiment.winner, experiment.promoted) == ("decided", "b", True)

    # A real customer id whose hash bucket is a's.
    loser = next(
        c for c in (f"late_{i}" for i in itertools.count()) if split_bucket(rule_id, c) < 50
    )
    async with sessionmaker() as session, session.begin():
        late = await experiments.assign(
            session, _journey(rule_id, loser, split_bucket(rule_id, loser))
        )
        retried = await experiments.assign(session, _journey(rule_id, early, BUCKETS["a"]))
        recorded = await session.get(SplitAssignment, (f"cart/{loser}", "run", "0"))
    assert (late.variant, late.reason) == ("b", "winner")
    assert recorded is not None
    assert (recorded.variant, recorded.reason) == ("b", "winner")
    # The journey that split before the decision keeps its variant on a retry.
    assert (retried.variant, retried.reason) == ("a", "bucket")


# --- analytics ---------------------------------------------------------------------------


async def _seed_journeys(sessionmaker: async_sessionmaker[AsyncSession], rule_id: str) -> None:
    """Three journeys: two took a (one converted, on an email sent, delivered and opened;
    one ended unsubscribed), one took b (its SMS failed); plus a test run that must not
    count."""
    async with sessionmaker() as session, session.begin():
        for customer, variant, reason, test in [
            ("ca1", "a", "converted", False),
            ("ca2", "a", "unsubscribed", False),
            ("cb1", "b", None, False),
            ("ct1", "a", "completed", True),
        ]:
            workflow_id = f"cart/{rule_id}/{customer}"
            session.add(
                JourneyEntry(
                    rule_id=rule_id,
                    rule_version=1,
                    customer_id=customer,
                    workflow_id=workflow_id,
                    test=test,
                    exited_at=NOW if reason else None,
                    exit_reason=reason,
                )
            )
            await session.flush()
            await experiments.assign_all(
                session,
                [
                    _journey(rule_id, customer, BUCKETS[variant]).model_copy(
                        update={"workflow_id": workflow_id, "test": test}
                    )
                ],
            )
            channel = "email" if variant == "a" else "sms"
            message = Message(
                key=f"{workflow_id}/0.{variant}.0",
                customer_id=customer,
                channel=channel,
                template="cart_reminder_1",
                kind="marketing",
                status="opened" if customer in ("ca1", "ct1") else "sent",
                rule_id=rule_id,
                rule_version=1,
                step=f"0.{variant}.0",
                workflow_id=workflow_id,
                details={"variant": variant},
                sent_at=NOW,
                delivered_at=NOW if customer in ("ca1", "ct1") else None,
                opened_at=NOW if customer in ("ca1", "ct1") else None,
            )
            if customer == "cb1":
                message.status, message.sent_at = "failed", None
            session.add(message)
            await session.flush()
            if reason in ("converted", "completed"):
                session.add(
                    Attribution(
                        order_id=uid("ord"),
                        customer_id=customer,
                        message_id=message.id,
                        rule_id=rule_id,
                        rule_version=1,
                        step=f"0.{variant}.0",
                        variant=variant,
                        channel=channel,
                        revenue=Decimal("9000"),
                        currency="PKR",
                        discount=Decimal("450"),
                        ordered_at=NOW,
                    )
                )


async def test_rule_analytics_show_each_variant_and_the_experiment(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    rule_id, _ = await _rule(sessionmaker, min_sample=10)
    await _seed_journeys(sessionmaker, rule_id)

    # The seeded messages were sent on NOW; the journeys entered today.
    response = await api.get(f"/v1/analytics/rules/{rule_id}?from={NOW.date()}")

    assert response.status_code == 200, response.text
    body = response.json()
    [version] = body["versions"]
    assert version["version"] == 1
    a, b = version["variants"]
    assert (a["variant"], a["entered"], a["exited"]) == (
        "a",
        2,
        {"converted": 1, "unsubscribed": 1},
    )
    assert a["messages"] == {
        "email": {
            "sent": 2,
            "delivered": 1,
            "opened": 1,
            "clicked": 0,
            "bounced": 0,
            "failed": 0,
        }
    }
    assert (a["conversions"], a["conversion_rate"]) == (1, 0.5)
    assert a["revenue"] == {"PKR": "9000.0000"}
    assert a["discount_cost"] == {"PKR": "450.0000"}
    assert (b["variant"], b["entered"], b["exited"], b["conversions"]) == ("b", 1, {}, 0)
    assert b["messages"]["sms"]["failed"] == 1
    assert b["messages"]["sms"]["sent"] == 0
    assert b["conversion_rate"] == 0.0

    [experiment] = body["experiments"]
    assert (experiment["version"], experiment["path"], experiment["status"]) == (1, "0", "running")
    assert experiment["weights"] == {"a": 50, "b": 50}
    figures = {v["name"]: (v["journeys"], v["conversions"]) for v in experiment["variants"]}
    assert figures == {"a": (2, 1), "b": (1, 0)}  # the test run is not a journey of the test
    assert experiment["best"] == "a"
    assert experiment["variants"][1]["p_value"] == pytest.approx(experiments.p_value(1, 2, 0, 1))
    assert experiment["winner"] is None
    assert experiment["verdict"].startswith("collecting")


async def test_rule_analytics_need_the_scope_and_a_known_rule(api: Api):
    missing = await api.get("/v1/analytics/rules/rule_nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"

    created = await api.http.post(
        "/v1/api-keys",
        json={"name": "rules only", "scopes": ["rules:read"]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 201, created.text
    refused = await api.get("/v1/analytics/rules/rule_nope", key=created.json()["key"])
    assert refused.status_code == 403


async def test_held_out_journeys_take_a_variant_but_count_in_none(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    rule_id, _ = await _rule(sessionmaker)
    await _seed(sessionmaker, rule_id, {"a": (40, 10), "b": (40, 20)})
    held = [uid("c") for _ in range(30)]  # sent nothing, so they convert nowhere
    async with sessionmaker() as session, session.begin():
        await experiments.assign_all(session, [_journey(rule_id, c, BUCKETS["a"]) for c in held])
        session.add_all(
            JourneyEntry(
                rule_id=rule_id,
                rule_version=1,
                customer_id=c,
                workflow_id=f"cart/{c}",
                holdout=True,
            )
            for c in held
        )

    async with sessionmaker() as session:
        found = await experiments.results(session, rule_id, 1, "0", ["a", "b"])

    assert {v.name: (v.journeys, v.conversions) for v in found} == {"a": (40, 10), "b": (40, 20)}
