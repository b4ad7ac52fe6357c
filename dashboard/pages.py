"""What each page shows, fetched in one function per page from the same service functions
the API answers with, so a page and its endpoint cannot disagree.

When richer services land (the customer journeys service, say), each page changes here
and nowhere else.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError

from config.settings import Settings
from contracts import search_attributes as sa
from contracts.errors import ServiceUnavailable
from contracts.rules import RuleDefinition, WaitStep, send_steps
from services.analytics import lift
from services.analytics import payments as payment_figures
from services.analytics.collections import payment_collections
from services.analytics.overview import overview as shop_overview
from services.analytics.period import Period
from services.analytics.rules import rule_figures
from services.customers import profiles
from services.journeys import admission, rules
from services.messaging import queries

STATUSES = ("sent", "delivered", "opened", "clicked", "bounced", "failed")
FUNNEL = ("entered", "sent", "delivered", "opened", "clicked", "conversions")
MESSAGE_FILTERS = ("channel", "status", "customer_id", "rule_id")
PAGE_SIZE = 25


async def overview(session: AsyncSession, period: Period) -> dict[str, Any]:
    """GET /v1/analytics/overview's figures, arranged for the page: per currency side by
    side, and per day as one series per currency or channel."""
    o = await shop_overview(session, period)
    revenue, days = o["revenue"], o["days"]
    currencies = sorted(set(revenue["order_revenue"]) | set(revenue["attributed_revenue"]))
    sent = {c: sum(d["messages"][c] for d in days) for c in o["deliverability"]}
    totals = {
        k: sum(ch[k] for ch in o["deliverability"].values())
        for k in ("sent", "delivered", "bounced", "failed", "suppressed")
    }
    return {
        "revenue": {
            "attributed_orders": revenue["attributed_orders"],
            "shop_orders": revenue["orders"],
            "currencies": [
                {
                    "currency": c,
                    "attributed": Decimal(revenue["attributed_revenue"].get(c, "0")),
                    "shop": Decimal(revenue["order_revenue"].get(c, "0")),
                    "share": revenue["attributed_share"].get(c),
                }
                for c in currencies
            ],
            "by_day": {
                c: [Decimal(d["attributed_revenue"].get(c, "0")) for d in days] for c in currencies
            },
        },
        "carts": {
            "abandoned": o["carts"]["abandoned_journeys"],
            "recovered": o["carts"]["recovered"],
            "recovery_rate": o["carts"]["recovery_rate"],
        },
        "messages": {
            **totals,
            "by_day": {c: [d["messages"][c] for d in days] for c, n in sent.items() if n},
            "delivery_rate": totals["delivered"] / totals["sent"] if totals["sent"] else None,
            "bounce_rate": totals["bounced"] / totals["sent"] if totals["sent"] else None,
        },
        "unsubscribes": o["suppressions"],
        "journeys_running": o["journeys_running"],
    }


async def payments(session: AsyncSession, period: Period) -> dict[str, Any]:
    """What the payment links collected (the payment ledger), and GET
    /v1/analytics/payments' figures at its default ``min_orders``: orders, cancellations,
    RTO and revenue by payment type, and the ten worst cities and postal codes by RTO."""
    return {
        "collections": await payment_collections(session, period),
        "analytics": await payment_figures.payments(
            session, period, min_orders=payment_figures.MIN_PLACE_ORDERS
        ),
    }


def totals(figures: dict[str, Any]) -> dict[str, Any]:
    """One rule's figures summed over versions and variants: its funnel and its money."""
    out: dict[str, Any] = dict.fromkeys(FUNNEL, 0)
    out |= dict.fromkeys(STATUSES, 0)
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    discount: dict[str, Decimal] = defaultdict(Decimal)
    for version in figures["versions"]:
        for variant in version["variants"]:
            out["entered"] += variant["entered"]
            out["conversions"] += variant["conversions"]
            for counts in variant["messages"].values():
                for status in STATUSES:
                    out[status] += counts[status]
            for currency, amount in variant["revenue"].items():
                revenue[currency] += Decimal(amount)
            for currency, amount in variant["discount_cost"].items():
                discount[currency] += Decimal(amount)
    out["conversion_rate"] = out["conversions"] / out["entered"] if out["entered"] else None
    out["revenue"] = dict(sorted(revenue.items()))
    out["discount_cost"] = dict(sorted(discount.items()))
    return out


async def rule_list(
    session: AsyncSession, settings: Settings, period: Period
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for rule in await rules.list_rules(session):
        figures = await rule_figures(session, settings, rule, period, "send")
        found.append({"rule": rule, "totals": totals(figures)})
    order = {"active": 0, "paused": 1, "draft": 2, "archived": 3}
    found.sort(key=lambda r: (order.get(r["rule"].status, 9), -r["totals"]["entered"]))
    return found


def describe_steps(definition: RuleDefinition) -> list[dict[str, Any]]:
    """The rule's top-level steps as the marketer wrote them, numbered as the ledger's
    ``step`` paths are."""
    dumped = definition.model_dump(mode="json", by_alias=True)["steps"]
    out = []
    for n, (model, step) in enumerate(zip(definition.steps, dumped, strict=True)):
        kind = next(iter(step))
        body = model.wait.total_seconds() if isinstance(model, WaitStep) else step[kind]
        out.append({"path": str(n), "kind": kind, "body": body})
    return out


async def step_rows(
    session: AsyncSession, rule_id: str, figures: dict[str, Any]
) -> list[dict[str, Any]]:
    """GET /v1/analytics/rules/{id}'s ``versions[].variants[].steps[].channels``, one row
    per version, variant, step and channel: the message counts, and the messages never
    sent (suppressed) in all and by reason; each with the template its version's step
    sends."""
    templates: dict[tuple[int, str], str] = {}
    for version in figures["versions"]:
        if version["variants"]:
            stored = await rules.version_of(session, rule_id, version["version"])
            steps = RuleDefinition.model_validate(stored.definition).steps
            for path, send in send_steps(steps):
                templates[(version["version"], path)] = send.template
    rows = []
    for version in figures["versions"]:
        for variant in version["variants"]:
            for step in variant["steps"]:
                for channel, counts in step["channels"].items():
                    reasons = counts["suppressed"]
                    rows.append(
                        {
                            "version": version["version"],
                            "variant": variant["variant"],
                            "step": step["step"],
                            "template": templates.get((version["version"], step["step"] or "")),
                            "channel": channel,
                            **{status: counts[status] for status in STATUSES},
                            "suppressed": sum(reasons.values()),
                            "suppressed_by": {r: n for r, n in reasons.items() if n},
                        }
                    )
    return rows


async def holdout_lift(
    session: AsyncSession, rule_id: str, definition: RuleDefinition, period: Period
) -> dict[str, Any] | None:
    """GET /v1/analytics/rules/{id}/lift's versions over the period, or None when the rule
    has no holdout (its current version holds none out and no version held any out)."""
    versions = [lift.describe(v) for v in await lift.rule_lift(session, rule_id, period)]
    if not definition.holdout_percent and all(v["status"] == "no_holdout" for v in versions):
        return None
    return {"min_sample": lift.MIN_SAMPLE, "versions": versions}


async def rule_page(
    session: AsyncSession, settings: Settings, rule_id: str, period: Period
) -> dict[str, Any]:
    """GET /v1/analytics/rules/{id}'s figures (by send date) over the period, and its
    holdout lift (journeys entered in the period)."""
    rule = await rules.get(session, rule_id)
    current = await rules.version_of(session, rule_id, rule.version)
    definition = RuleDefinition.model_validate(current.definition)
    figures = await rule_figures(session, settings, rule, period, "send")
    return {
        "rule": rule,
        "definition": definition,
        "steps": describe_steps(definition),
        "figures": figures,
        "totals": totals(figures),
        "step_rows": await step_rows(session, rule_id, figures),
        "lift": await holdout_lift(session, rule_id, definition, period),
    }


async def journeys(
    session: AsyncSession, temporal: Client, settings: Settings, customer_id: str
) -> dict[str, Any]:
    """The customer's workflows from Temporal visibility, each with the rule entry it made
    (as GET /v1/customers/{id}/journeys) and its page in the Temporal UI."""
    customer = await profiles.get(session, customer_id)
    entries = {
        (e.workflow_id, e.run_id): e for e in await admission.entries_of(session, customer_id)
    }
    found = []
    try:
        async for execution in temporal.list_workflows(
            sa.equals(sa.CUSTOMER_ID, customer_id), limit=200
        ):
            entry = entries.get((execution.id, execution.run_id)) or entries.get(
                (execution.id, None)
            )
            found.append(
                {
                    "workflow_id": execution.id,
                    "run_id": execution.run_id,
                    "workflow_type": execution.workflow_type,
                    "status": execution.status.name if execution.status else "UNKNOWN",
                    "started_at": execution.start_time,
                    "closed_at": execution.close_time,
                    "journey_status": execution.typed_search_attributes.get(sa.JOURNEY_STATUS),
                    "rule": entry,
                    "temporal_url": (
                        f"{settings.temporal_ui_url.rstrip('/')}/namespaces/"
                        f"{settings.temporal_namespace}/workflows/{execution.id}/{execution.run_id}"
                    ),
                }
            )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not list the journeys: {exc.message}") from exc
    return {"customer": customer, "journeys": found}


async def messages(
    session: AsyncSession, filters: dict[str, str | None], cursor: str | None
) -> dict[str, Any]:
    status = filters.get("status")
    rows, next_cursor = await queries.newest_first(
        session,
        filters={k: v for k, v in filters.items() if k != "status"},
        status=status,
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    return {"messages": rows, "next_cursor": next_cursor}
