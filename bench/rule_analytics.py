"""Rule analytics at volume: `python bench/rule_analytics.py` (DATABASE_URL's server; a
scratch database is created and dropped).

Loads 1,000,000 ledger rows over 90 days (20 rules, one of them holding 40% of the ledger,
two versions, two variants, two steps, three channels, every status), 200,000 journey
entries, 50,000 attributions in two currencies, unsubscribes and complaints; then reads
each figure set the API answers with (the services the routers call, in a fresh session
each time) and prints p50/p95 per reading over the last 30 days and the last 7.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import get_args
from zoneinfo import ZoneInfo

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from db.engine import create_engine, create_sessionmaker  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import Rule  # noqa: E402
from services.analytics import rule_list  # noqa: E402
from services.analytics import rules as rule_analytics  # noqa: E402
from services.analytics.period import Period  # noqa: E402
from services.analytics.rule_queries import Basis  # noqa: E402

LOAD = """
INSERT INTO rules (id, name, trigger_event, status, version)
SELECT 'rule_' || r, 'Rule ' || r, 'cart.abandoned', 'active', 2 FROM generate_series(0, 19) r;
INSERT INTO rule_versions (rule_id, version, definition)
SELECT 'rule_' || r, v, '{"name": "x", "trigger": {"event": "cart.abandoned"}, "steps": [
    {"split": [{"weight": 50, "name": "a", "steps": [{"send": {"channels": ["email"],
    "template": "cart_reminder_1"}}, {"wait": "PT1H"}, {"send": {"channels": ["sms"],
    "template": "cart_reminder_1"}}]}, {"weight": 50, "name": "b", "steps": [{"send":
    {"channels": ["whatsapp"], "template": "cart_reminder_1"}}, {"wait": "PT1H"}, {"send":
    {"channels": ["email"], "template": "cart_reminder_1"}}]}]}]}'
FROM generate_series(0, 19) r, generate_series(1, 2) v;
INSERT INTO messages (id, key, customer_id, channel, template, kind, status, details,
    rule_id, rule_version, step, workflow_id, created_at, updated_at, sent_at, delivered_at,
    opened_at, clicked_at, failed_at)
SELECT gen_random_uuid(), 'bench/' || g, 'c_' || (g % 200000),
    CASE WHEN st = 'suppressed' AND g % 2 = 0 THEN NULL
         ELSE (ARRAY['email', 'sms', 'whatsapp'])[1 + g % 3] END,
    'cart_reminder_1', 'marketing', st,
    jsonb_build_object('variant', v) || CASE WHEN st = 'suppressed'
        THEN jsonb_build_object('suppressed', (ARRAY['consent', 'no_channel',
             'frequency_cap', 'abandoned'])[1 + g % 4]) ELSE '{}'::jsonb END
        || CASE WHEN g % 11 = 0 THEN '{"deferrals": [{"reason": "quiet_hours"}]}'::jsonb
                ELSE '{}'::jsonb END,
    rule, 1 + (g / 7) % 2, '0.' || v || '.' || (2 * ((g / 3) % 2)), 'wf/' || (g % 200000),
    t, t + interval '2 hours',
    CASE WHEN st IN ('sent', 'delivered', 'opened', 'clicked', 'bounced') THEN t END,
    CASE WHEN st IN ('delivered', 'opened', 'clicked') THEN t + interval '1 minute' END,
    CASE WHEN st IN ('opened', 'clicked') THEN t + interval '1 hour' END,
    CASE WHEN st = 'clicked' THEN t + interval '2 hours' END,
    CASE WHEN st IN ('bounced', 'failed') THEN t + interval '1 minute' END
FROM (
    SELECT g, now() - g * interval '7.776 seconds' AS t,
        (ARRAY['sent', 'delivered', 'opened', 'clicked', 'bounced', 'failed',
               'suppressed', 'delivered'])[1 + g % 8] AS st,
        CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END AS v,
        CASE WHEN g % 10 < 4 THEN 'rule_0' ELSE 'rule_' || (1 + g % 19) END AS rule
    FROM generate_series(1, 1000000) g
) s;
INSERT INTO journey_entries (rule_id, rule_version, customer_id, workflow_id, variant,
    run_id, test, entered_at, exited_at, exit_reason)
SELECT CASE WHEN g % 10 < 4 THEN 'rule_0' ELSE 'rule_' || (1 + g % 19) END,
    1 + (g / 7) % 2, 'c_' || g, 'wf/' || g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,
    'r', g % 1000 = 0, now() - g * interval '38.88 seconds',
    CASE WHEN g % 3 > 0 THEN now() - g * interval '38.88 seconds' + interval '3 days' END,
    (ARRAY[NULL, 'converted', 'completed'])[1 + g % 3]
FROM generate_series(1, 200000) g;
INSERT INTO attributions (order_id, customer_id, message_id, rule_id, rule_version, step,
    variant, channel, revenue, currency, discount, ordered_at)
SELECT 'o_' || m.key, m.customer_id, m.id, m.rule_id, m.rule_version, m.step,
    m.details ->> 'variant', m.channel, 4500, CASE WHEN random() < 0.8 THEN 'PKR' ELSE 'USD' END,
    225, m.sent_at + interval '1 day'
FROM messages m WHERE m.status IN ('delivered', 'clicked') AND random() < 0.2 LIMIT 50000;
INSERT INTO suppressions (channel, address, scope, reason, source, message_id, created_at)
SELECT 'email', m.id::text, 'marketing', 'unsubscribe', 'unsubscribe_link', m.id,
    m.sent_at + interval '1 day'
FROM messages m WHERE m.channel = 'email' AND m.status = 'clicked' LIMIT 5000;
INSERT INTO message_events (message_id, provider, provider_event_id, status, occurred_at,
    payload)
SELECT m.id, 'sendgrid', m.key || s, s, m.sent_at + interval '1 hour', '{}'
FROM messages m, unnest(ARRAY['delivered', 'open', 'spamreport']) s
WHERE m.channel = 'email' AND m.status IN ('opened', 'clicked') AND random() < 0.3;
ANALYZE;
"""


async def _time(label: str, runs: int, read: Callable[[], Awaitable[None]]) -> None:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        await read()
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    p95 = took[max(0, round(0.95 * len(took)) - 1)]
    print(f"{label:<44} p50 {statistics.median(took):7.1f} ms   p95 {p95:7.1f} ms")


async def _bench(url: str, runs: int) -> None:
    settings = Settings(
        database_url=url, message_costs={"email": {"PKR": "0.5"}, "sms": {"PKR": "2"}}
    )
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    zone = ZoneInfo("Asia/Karachi")
    today = date.today()

    def one(rule_id: str, period: Period, basis: Basis) -> Callable[[], Awaitable[None]]:
        async def read() -> None:
            async with sessionmaker() as session:
                rule = await session.get(Rule, rule_id)
                assert rule is not None
                await rule_analytics.rule_figures(session, settings, rule, period, basis)

        return read

    def every(period: Period, basis: Basis) -> Callable[[], Awaitable[None]]:
        async def read() -> None:
            async with sessionmaker() as session:
                await rule_list.all_rules(session, settings, period, basis)

        return read

    try:
        for days in (30, 7):
            period = Period(today - timedelta(days=days - 1), today, zone)
            for basis in get_args(Basis):
                for rule_id, what in (("rule_0", "400k rows"), ("rule_7", "32k rows")):
                    label = f"rules/{{id}} ({what}) {days}d basis={basis}"
                    await _time(label, runs, one(rule_id, period, basis))
                await _time(f"rules (20 rules) {days}d basis={basis}", runs, every(period, basis))
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--loaded", help="the URL of a database this script loaded; kept")
    args = parser.parse_args()
    if args.loaded:
        asyncio.run(_bench(args.loaded, args.runs))
        return
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        sys.exit("set DATABASE_URL to a PostgreSQL server the bench may create a database on")
    name = f"sutra_bench_rules_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(LOAD)
        print(f"loaded 1,000,000 ledger rows in {time.perf_counter() - started:.0f} s")
        asyncio.run(_bench(url, args.runs))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
