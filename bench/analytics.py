"""Analytics answers at volume: ``python bench/analytics.py [--messages N] [--orders N]``.

Seeds a scratch database on DATABASE_URL's server (else an embedded pgserver) with a
shop's half year: 100,000 customers, 50 rules, 300,000 cart journeys, N ledger rows
(default 1,000,000) across three channels and every status, N orders (default 200,000)
as the shop reported them and as the order read model holds them, attributions, consent
changes and provider reports. Then asks every analytics endpoint through the real app
(in process, over ASGI: routing, auth, validation and serialisation included; no network)
and prints p50 / p95 / max per endpoint over ``--requests`` answers each, after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from asgi_lifespan import LifespanManager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from config.settings import Environment, Settings  # noqa: E402
from contracts.rules import RuleDefinition  # noqa: E402
from db.migrate import upgrade  # noqa: E402

DAYS = 180
RULES = 50
CUSTOMERS = 100_000
JOURNEYS = 300_000
ADMIN_KEY = "sk_bench_" + secrets.token_hex(16)

RULE = {
    "name": "Bench cart recovery",
    "trigger": {"event": "cart.abandoned", "after": "PT1H"},
    "steps": [
        {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
        {"wait": "PT4H"},
        {
            "split": [
                {
                    "name": "a",
                    "weight": 50,
                    "steps": [{"send": {"channels": ["sms"], "template": "cart_reminder_2"}}],
                },
                {
                    "name": "b",
                    "weight": 50,
                    "steps": [{"send": {"channels": ["whatsapp"], "template": "cart_reminder_2"}}],
                },
            ]
        },
    ],
    "exit": {"events": ["order.placed"], "order_scope": "cart"},
}

# Spread evenly over the half year that ends now; n is the row number.
SEED = """
INSERT INTO customers (id, email, first_seen_at)
SELECT 'c' || n, 'c' || n || '@example.com', now() - interval '200 days'
FROM generate_series(1, {customers}) n;

INSERT INTO rules (id, name, trigger_event, status, version)
SELECT 'rule_b' || r, 'Bench rule ' || r, 'cart.abandoned', 'active', 1
FROM generate_series(1, {rules}) r;
INSERT INTO rule_versions (rule_id, version, definition)
SELECT 'rule_b' || r, 1, {rule}::jsonb FROM generate_series(1, {rules}) r;

INSERT INTO journey_entries (rule_id, rule_version, customer_id, workflow_id, cart_id,
                             variant, entered_at, exited_at, exit_reason)
SELECT 'rule_b' || (1 + n % {rules}), 1, 'c' || (1 + n % {customers}), 'cart/k' || n,
       'k' || n, (ARRAY['a', 'b', NULL])[1 + n % 3], t,
       CASE WHEN n % 5 > 0 THEN t + interval '6 hours' END,
       CASE n % 5 WHEN 1 THEN 'converted' WHEN 2 THEN 'ordered' WHEN 3 THEN 'expired'
                   WHEN 4 THEN 'emptied' END
FROM generate_series(1, {journeys}) n,
     LATERAL (SELECT now() - make_interval(secs => n * {days} * 86400.0 / {journeys})) x(t);

INSERT INTO messages (id, key, customer_id, channel, template, kind, status, rule_id,
                      rule_version, step, workflow_id, cart_id, details, sent_at,
                      delivered_at, opened_at, clicked_at, failed_at, created_at)
SELECT gen_random_uuid(), 'bench:' || n, 'c' || (1 + n % {customers}),
       (ARRAY['email', 'sms', 'whatsapp'])[1 + n % 3], 'cart_reminder_1', 'marketing', s,
       'rule_b' || (1 + n % {rules}), 1, (n % 3)::text, 'cart/k' || (1 + n % {journeys}),
       'k' || (1 + n % {journeys}),
       CASE n % 3 WHEN 0 THEN '{{"variant": "a"}}'::jsonb ELSE '{{}}'::jsonb END,
       CASE WHEN s NOT IN ('suppressed', 'failed') THEN t END,
       CASE WHEN s IN ('delivered', 'opened', 'clicked') THEN t + interval '1 minute' END,
       CASE WHEN s IN ('opened', 'clicked') THEN t + interval '1 hour' END,
       CASE WHEN s = 'clicked' THEN t + interval '2 hours' END,
       CASE WHEN s = 'failed' THEN t END, t
FROM generate_series(1, {messages}) n,
     LATERAL (SELECT now() - make_interval(secs => n * {days} * 86400.0 / {messages}),
                     (ARRAY['sent', 'delivered', 'delivered', 'opened', 'clicked', 'bounced',
                            'failed', 'suppressed'])[1 + n % 8]) x(t, s);

INSERT INTO events (id, type, occurred_at, customer_id, order_id, payload, payload_sha256)
SELECT 'evt_o' || n, 'order.placed', t, 'c' || (1 + n % {customers}), 'o' || n, p,
       encode(sha256(p::text::bytea), 'hex')
FROM generate_series(1, {orders}) n,
     LATERAL (SELECT now() - make_interval(secs => n * {days} * 86400.0 / {orders}),
                     jsonb_build_object('type', 'order.placed', 'data',
                       jsonb_build_object('order_id', 'o' || n,
                                          'total', (500 + n % 4500)::text || '.00',
                                          'currency', 'INR'))) x(t, p);

INSERT INTO orders (order_id, customer_id, payment_type, placed_payment_type, status,
                    payment_status, currency, total, discount, paid_amount, refunded_amount,
                    city, postal_code, placed_at, paid_at, delivered_at, rto_at, cancelled_at,
                    reminders_sent, cod_confirmation_asked, cod_confirmation_answer,
                    converted_to_prepaid, on_hold, sla_breached, updated_at, version)
SELECT 'o' || n, 'c' || (1 + n % {customers}), pt, pt,
       (ARRAY['delivered', 'delivered', 'delivered', 'rto', 'cancelled', 'shipped'])[1 + n % 6],
       CASE WHEN pt = 'prepaid' THEN 'fully_paid' ELSE 'pending' END, 'INR',
       500 + n % 4500, 0, 0, CASE WHEN n % 50 = 0 THEN 100 ELSE 0 END,
       (ARRAY['Karachi', 'Lahore', 'Quetta', 'Multan', 'Peshawar'])[1 + n % 5],
       (10000 + n % 300)::text, t,
       CASE WHEN pt = 'partial_cod' AND n % 4 > 0 THEN t + make_interval(mins => n % 600) END,
       CASE WHEN n % 6 < 3 THEN t + interval '3 days' END,
       CASE WHEN n % 6 = 3 THEN t + interval '4 days' END,
       CASE WHEN n % 6 = 4 THEN t + interval '1 hour' END,
       n % 3, pt = 'cod', CASE WHEN pt = 'cod' THEN 'yes' END, pt = 'cod' AND n % 9 = 0,
       false, false, t, 1
FROM generate_series(1, {orders}) n,
     LATERAL (SELECT now() - make_interval(secs => n * {days} * 86400.0 / {orders}),
                     (ARRAY['cod', 'cod', 'partial_cod', 'prepaid'])[1 + n % 4]) x(t, pt);

INSERT INTO attributions (order_id, customer_id, cart_id, message_id, rule_id, rule_version,
                          step, variant, channel, revenue, currency, ordered_at)
SELECT 'o' || (1 + (row_number() OVER ()) * 5 % {orders}), m.customer_id, m.cart_id, m.id,
       m.rule_id, 1, m.step, m.details ->> 'variant', m.channel,
       500 + (row_number() OVER ()) % 4500, 'INR', m.sent_at + interval '3 hours'
FROM messages m WHERE m.status IN ('clicked', 'opened') AND right(m.key, 1) IN ('0', '5')
ON CONFLICT DO NOTHING;

INSERT INTO message_events (message_id, provider, provider_event_id, status, occurred_at,
                            payload)
SELECT id, 'sendgrid', 'sg_' || key, 'spamreport', created_at, '{{}}'::jsonb
FROM messages WHERE channel = 'email' AND right(key, 3) = '007';

INSERT INTO consent_changes (customer_id, channel, granted, previous, source, occurred_at)
SELECT 'c' || (1 + n * 7 % {customers}), (ARRAY['email', 'sms', 'whatsapp'])[1 + n % 3],
       false, true, 'unsubscribe_link', now() - make_interval(days => n % {days})
FROM generate_series(1, {customers} / 10) n;
ANALYZE;
"""


def _endpoints(today: datetime) -> dict[str, str]:
    last30 = f"from={(today - timedelta(days=29)).date()}&to={today.date()}"
    half = f"from={(today - timedelta(days=DAYS - 1)).date()}&to={today.date()}"
    return {
        "overview, 30 days": f"/v1/analytics/overview?{last30}",
        "overview, 180 days": f"/v1/analytics/overview?{half}",
        "overview, 180 days, CSV": f"/v1/analytics/overview?{half}#csv",
        "rules list, 30 days": f"/v1/analytics/rules?{last30}",
        "rule rule_b7, 30 days": f"/v1/analytics/rules/rule_b7?{last30}",
        "rule rule_b7, 30 days, event": f"/v1/analytics/rules/rule_b7?{last30}&basis=event",
        "lift rule_b7, 30 days": f"/v1/analytics/rules/rule_b7/lift?{last30}",
        "payments, 30 days": f"/v1/analytics/payments?{last30}",
        "payments, 180 days": f"/v1/analytics/payments?{half}",
        "net revenue, 30 days": f"/v1/analytics/net-revenue?{last30}",
        "net revenue, 180 days": f"/v1/analytics/net-revenue?{half}",
    }


@asynccontextmanager
async def _database(keep: bool = False) -> AsyncIterator[str]:
    """A scratch database on DATABASE_URL's server, else on an embedded pgserver."""
    admin = os.environ.get("DATABASE_URL")
    server: Any = None
    if not admin:
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="sutra-bench-"), cleanup_mode="delete")
        admin = server.get_uri("postgres")
    admin = admin.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"sutra_bench_analytics_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        if keep and server is None:
            print(f"kept {url}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if server is not None:
            server.cleanup()


def _seed(url: str, messages: int, orders: int) -> float:
    started = time.perf_counter()
    sql = SEED.format(
        customers=CUSTOMERS,
        rules=RULES,
        journeys=JOURNEYS,
        messages=messages,
        orders=orders,
        days=DAYS,
        rule="'" + json.dumps(RULE).replace("'", "''") + "'",
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())
    return time.perf_counter() - started


async def _measure(url: str, requests: int) -> list[tuple[str, list[float]]]:
    settings = Settings(
        env=Environment.test,
        database_url=url,
        bootstrap_admin_key=ADMIN_KEY,
        dispatcher_enabled=False,
        rate_limit_per_minute=0,
        stranded_check_every=timedelta(hours=1),
    )
    app = create_app(settings)
    results = []
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for name, path in _endpoints(datetime.now(UTC)).items():
                url_path, _, fragment = path.partition("#")
                headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
                if fragment == "csv":
                    headers["Accept"] = "text/csv"
                timings = []
                for attempt in range(requests + 3):
                    started = time.perf_counter()
                    response = await http.get(url_path, headers=headers)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        raise SystemExit(f"{name}: {response.status_code} {response.text[:300]}")
                    if attempt >= 3:  # warm-up: plans cached, pages in shared buffers
                        timings.append(elapsed * 1000)
                results.append((name, timings))
    return results


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the database (for EXPLAIN)")
    args = parser.parse_args()
    RuleDefinition.model_validate(RULE)  # before minutes of seeding, not after
    async with _database(args.keep) as url:
        upgrade(url)
        seeded = _seed(url, args.messages, args.orders)
        print(
            f"seeded {args.messages:,} ledger rows, {args.orders:,} orders, {JOURNEYS:,}"
            f" journeys in {seeded:.0f} s"
        )
        results = await _measure(url, args.requests)
    print(f"{'endpoint':<32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, timings in results:
        print(
            f"{name:<32} {statistics.median(timings):>8.1f} {_p(timings, 0.95):>8.1f}"
            f" {max(timings):>8.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
