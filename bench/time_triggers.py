"""Time-trigger due queries at scale: ``python bench/time_triggers.py [--customers N]``.

Seeds N customers (default 200,000) with birthdays, time zones, order history and
consumable purchases in a scratch database on DATABASE_URL's server, then pages through
each trigger's due query the way the sweep does (500 a page) and prints per trigger the
pages, due items, the slowest page, and the plan of the first page (EXPLAIN ANALYZE) so
that an index scan can be checked, not assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import Environment, Settings  # noqa: E402
from contracts.rules import Trigger  # noqa: E402
from db.engine import create_engine, create_sessionmaker  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from services.journeys import time_triggers  # noqa: E402

SEED = """
INSERT INTO customers (id, email, timezone, birthday, first_seen_at)
SELECT 'c' || n, 'c' || n || '@example.com',
       (ARRAY['Asia/Karachi', 'America/New_York', 'Europe/London', 'Asia/Kolkata',
              'Pacific/Auckland', 'Not/AZone', NULL])[1 + n % 7],
       date '1980-01-01' + (n * 37 % 14000), now()
FROM generate_series(1, :n) n;
INSERT INTO customer_stats (customer_id, orders_count, first_order_at, first_order_md,
                            last_order_at)
SELECT 'c' || n, 3, f, (EXTRACT(MONTH FROM f AT TIME ZONE 'UTC') * 100
                        + EXTRACT(DAY FROM f AT TIME ZONE 'UTC'))::int,
       now() - make_interval(days => n % 400)
FROM generate_series(1, :n) n,
     LATERAL (SELECT now() - make_interval(days => 30 + n * 13 % 1500) AS f) x;
INSERT INTO product_purchases (order_id, sku, customer_id, quantity, purchased_at,
                               replenish_after_days, delivered_at, replenish_due_at)
SELECT 'o' || n, 'SKU' || n % 50, 'c' || n, 1, d - interval '3 days', 30, d,
       d + interval '30 days'
FROM generate_series(1, :n) n,
     LATERAL (SELECT now() - make_interval(days => n % 200) AS d) x;
ANALYZE;
"""


class Explaining:
    """A session that also records the plan of every statement it runs."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.plans: list[str] = []

    async def execute(self, statement: Any, params: dict[str, Any]) -> Any:
        plan = await self.session.execute(text("EXPLAIN ANALYZE " + statement.text), params)
        self.plans.append("\n".join(row[0] for row in plan))
        return await self.session.execute(statement, params)


async def run(url: str, customers: int) -> None:
    settings = Settings(env=Environment.test, database_url=url)
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    started = time.perf_counter()
    async with sessionmaker() as session, session.begin():
        for statement in SEED.split(";"):
            if statement.strip():
                await session.execute(text(statement), {"n": customers})
    print(f"seeded {customers:,} customers in {time.perf_counter() - started:.1f}s")
    now = datetime.now(UTC)
    for trigger in (
        Trigger(event="birthday"),
        Trigger(event="purchase_anniversary"),
        Trigger(event="inactivity", after=timedelta(days=90)),
        Trigger(event="replenishment_due"),
    ):
        pages = due = 0
        slowest = 0.0
        first_plan = ""
        key: str | None = None
        while True:
            async with sessionmaker() as session:
                explaining = Explaining(session)
                t0 = time.perf_counter()
                page = await time_triggers.due_page(
                    explaining,  # type: ignore[arg-type]
                    "rule_bench",
                    trigger,
                    now,
                    key,
                    500,
                )
                slowest = max(slowest, time.perf_counter() - t0)
            first_plan = first_plan or explaining.plans[0]
            pages, due, key = pages + 1, due + len(page.starts), page.next_key
            if key is None:
                break
        print(
            f"\n== {trigger.event}: {due:,} due in {pages} pages; slowest page "
            f"{slowest * 1000:.0f} ms (incl. EXPLAIN ANALYZE)\n{first_plan}"
        )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args()
    admin = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"sutra_bench_tt_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        asyncio.run(run(url, args.customers))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
