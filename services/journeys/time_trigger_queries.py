"""The due queries of the time triggers (services/journeys/time_triggers.py): one per
trigger, each a keyset page of the occurrences due as of ``now`` for one rule, in index
order, as the journeys to start and the key of the last row.

Every due item carries a deterministic *occurrence* — a birthday's local year, an
inactivity spell's last order, an order line — and occurrences whose journey was already
started are left out by the query itself (an anti-join on the claims' primary key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.lifecycle import JourneyStart
from contracts.rules import BIRTHDAY, INACTIVITY, PURCHASE_ANNIVERSARY, REPLENISHMENT_DUE, Trigger

# (session, rule_id, trigger, now, after, limit) -> (journeys to start, last row's key)
DueQuery = Callable[
    [AsyncSession, str, Trigger, datetime, list[Any] | None, int],
    Awaitable[tuple[list[JourneyStart], list[Any] | None]],
]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def month_days(days: list[date]) -> list[int]:
    """month*100+day of each date, plus Feb 29 on Feb 28 of a year without one: those born
    on a leap day celebrate on the 28th."""
    mds = set()
    for day in days:
        mds.add(day.month * 100 + day.day)
        if (day.month, day.day) == (2, 28) and (day + timedelta(days=1)).month == 3:
            mds.add(229)
    return sorted(mds)


def _around(now: datetime, spread: int) -> list[date]:
    today = now.astimezone(UTC).date()
    return [today + timedelta(days=d) for d in range(-spread, spread + 1)]


async def _rows(session: AsyncSession, sql: str, params: dict[str, Any]) -> Sequence[Row[Any]]:
    return (await session.execute(text(sql), params)).all()


def _occasion(
    rule_id: str,
    trigger: Trigger,
    now: datetime,
    after: list[Any] | None,
    limit: int,
    *,
    spread: int,
) -> dict[str, Any]:
    """The parameters of a yearly occasion's query (birthdays, anniversaries): keyed by
    month-day and id, due at the trigger's local time on any of the month-days ``spread``
    days either side of today."""
    return {
        "rule_id": rule_id,
        "now": now,
        "at": trigger.at or time(10, 0),
        "mds": month_days(_around(now, spread)),
        "after_md": after[0] if after else -1,
        "after_id": after[1] if after else "",
        "limit": limit,
    }


# A customer's zone, or UTC when it has none or PostgreSQL does not know it (AT TIME ZONE
# would fail the whole page on one bad name). pg_timezone_names is read once per query.
_ZONES = "zones AS MATERIALIZED (SELECT name FROM pg_timezone_names)"

# Does the local date :d (a date expression) fall on month-day :md (Feb 29 → Feb 28 in a
# year without it)?
_SAME_DAY = """(
    {md} = EXTRACT(MONTH FROM {d})::int * 100 + EXTRACT(DAY FROM {d})::int
    OR ({md} = 229 AND EXTRACT(MONTH FROM {d}) = 2 AND EXTRACT(DAY FROM {d}) = 28
        AND EXTRACT(DAY FROM make_date(EXTRACT(YEAR FROM {d})::int, 3, 1) - 1) = 28)
)"""

# Leaves out occurrences whose journey is already started (claims' primary key).
_NOT_STARTED = """NOT EXISTS (
    SELECT 1 FROM journey_claims j
    WHERE j.rule_id = :rule_id AND j.customer_id = {customer} AND j.occurrence = {occurrence}
      AND j.started_at IS NOT NULL
)"""

_BIRTHDAY_SQL = f"""
WITH {_ZONES}
SELECT c.id, c.birthday_md, l.local_day, l.zone,
       (l.local_day + CAST(:at AS time)) AT TIME ZONE l.zone AS triggered_at
FROM customers c
LEFT JOIN zones z ON z.name = c.timezone
CROSS JOIN LATERAL (
    SELECT coalesce(z.name, 'UTC') AS zone,
           (CAST(:now AS timestamptz) AT TIME ZONE coalesce(z.name, 'UTC'))::date AS local_day
) l
WHERE c.birthday_md = ANY(:mds)
  AND (c.birthday_md, c.id) > (:after_md, :after_id)
  AND {_SAME_DAY.format(md="c.birthday_md", d="l.local_day")}
  AND {
    _NOT_STARTED.format(
        customer="c.id", occurrence="'birthday-' || EXTRACT(YEAR FROM l.local_day)::int"
    )
}
ORDER BY c.birthday_md, c.id
LIMIT :limit
"""


async def _birthdays(
    session: AsyncSession,
    rule_id: str,
    trigger: Trigger,
    now: datetime,
    after: list[Any] | None,
    limit: int,
) -> tuple[list[JourneyStart], list[Any] | None]:
    # Every zone is within a day of UTC: today's birthdays anywhere are among these.
    params = _occasion(rule_id, trigger, now, after, limit, spread=1)
    rows = await _rows(session, _BIRTHDAY_SQL, params)
    starts = [
        JourneyStart(
            rule_id=rule_id,
            customer_id=row.id,
            occurrence=f"birthday-{row.local_day.year}",
            trigger=BIRTHDAY,
            triggered_at=row.triggered_at.astimezone(UTC),
            context={"occasion": {"kind": "birthday", "date": row.local_day.isoformat()}},
        )
        for row in rows
    ]
    return starts, ([rows[-1].birthday_md, rows[-1].id] if rows else None)


_ANNIVERSARY_SQL = f"""
WITH {_ZONES}
SELECT s.customer_id, s.first_order_md, s.first_order_at, l.local_day, l.first_day,
       (l.local_day + CAST(:at AS time)) AT TIME ZONE l.zone AS triggered_at
FROM customer_stats s
-- A subquery per candidate (a primary-key probe): as a join the planner may scan customers.
CROSS JOIN LATERAL (
    SELECT (SELECT c.timezone FROM customers c WHERE c.id = s.customer_id) AS timezone
) c
LEFT JOIN zones z ON z.name = c.timezone
CROSS JOIN LATERAL (
    SELECT coalesce(z.name, 'UTC') AS zone,
           (CAST(:now AS timestamptz) AT TIME ZONE coalesce(z.name, 'UTC'))::date AS local_day,
           (s.first_order_at AT TIME ZONE coalesce(z.name, 'UTC'))::date AS first_day
) l
WHERE s.first_order_md = ANY(:mds)
  AND (s.first_order_md, s.customer_id) > (:after_md, :after_id)
  AND {
    _SAME_DAY.format(
        md="(EXTRACT(MONTH FROM l.first_day)::int * 100 + EXTRACT(DAY FROM l.first_day)::int)",
        d="l.local_day",
    )
}
  AND EXTRACT(YEAR FROM l.local_day) > EXTRACT(YEAR FROM l.first_day)
  AND {
    _NOT_STARTED.format(
        customer="s.customer_id",
        occurrence="'anniversary-' || EXTRACT(YEAR FROM l.local_day)::int",
    )
}
ORDER BY s.first_order_md, s.customer_id
LIMIT :limit
"""


async def _anniversaries(
    session: AsyncSession,
    rule_id: str,
    trigger: Trigger,
    now: datetime,
    after: list[Any] | None,
    limit: int,
) -> tuple[list[JourneyStart], list[Any] | None]:
    # first_order_md is the UTC day; the anniversary is the local day of the first order,
    # at most a day off, and local today is at most a day off UTC today: ±2 days.
    params = _occasion(rule_id, trigger, now, after, limit, spread=2)
    rows = await _rows(session, _ANNIVERSARY_SQL, params)
    starts = [
        JourneyStart(
            rule_id=rule_id,
            customer_id=row.customer_id,
            occurrence=f"anniversary-{row.local_day.year}",
            trigger=PURCHASE_ANNIVERSARY,
            triggered_at=row.triggered_at.astimezone(UTC),
            context={
                "occasion": {
                    "kind": "purchase_anniversary",
                    "date": row.local_day.isoformat(),
                    "first_order_at": _iso(row.first_order_at),
                    "years": row.local_day.year - row.first_day.year,
                }
            },
        )
        for row in rows
    ]
    return starts, ([rows[-1].first_order_md, rows[-1].customer_id] if rows else None)


# The spell is named by its last order, to the second: a new order opens a new spell.
_SPELL = "to_char(s.last_order_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

_INACTIVITY_SQL = f"""
SELECT s.customer_id, s.last_order_at, {_SPELL} AS spell
FROM customer_stats s
WHERE s.last_order_at <= :cutoff
  AND (s.last_order_at, s.customer_id) > (:after_at, :after_id)
  AND {_NOT_STARTED.format(customer="s.customer_id", occurrence="'inactive-since-' || " + _SPELL)}
ORDER BY s.last_order_at, s.customer_id
LIMIT :limit
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def _inactive(
    session: AsyncSession,
    rule_id: str,
    trigger: Trigger,
    now: datetime,
    after: list[Any] | None,
    limit: int,
) -> tuple[list[JourneyStart], list[Any] | None]:
    idle = trigger.after or timedelta(days=90)
    params = {
        "rule_id": rule_id,
        "cutoff": now - idle,
        "after_at": datetime.fromisoformat(after[0]) if after else _EPOCH,
        "after_id": after[1] if after else "",
        "limit": limit,
    }
    rows = await _rows(session, _INACTIVITY_SQL, params)
    starts = [
        JourneyStart(
            rule_id=rule_id,
            customer_id=row.customer_id,
            occurrence=f"inactive-since-{row.spell}",
            trigger=INACTIVITY,
            triggered_at=row.last_order_at + idle,
            context={
                "inactivity": {
                    "last_order_at": _iso(row.last_order_at),
                    "days": (now - row.last_order_at).days,
                }
            },
        )
        for row in rows
    ]
    last = [rows[-1].last_order_at.isoformat(), rows[-1].customer_id] if rows else None
    return starts, last


_REPLENISH_SQL = f"""
SELECT p.order_id, p.sku, p.customer_id, p.product_id, p.name, p.category, p.quantity,
       p.purchased_at, p.delivered_at, p.replenish_due_at, p.replenish_after_days
FROM product_purchases p
WHERE p.replenish_due_at IS NOT NULL AND p.rebought_at IS NULL
  AND p.replenish_due_at <= :now
  AND (p.replenish_due_at, p.customer_id, p.order_id, p.sku)
      > (:after_at, :after_customer, :after_order, :after_sku)
  AND p.delivered_at IS NOT NULL
  -- bought again since (even before rebought_at is filled in): nothing to remind of
  AND NOT EXISTS (
      SELECT 1 FROM product_purchases q
      WHERE q.customer_id = p.customer_id AND q.sku = p.sku AND q.purchased_at > p.purchased_at
  )
  AND {
    _NOT_STARTED.format(
        customer="p.customer_id", occurrence="'replenish-' || p.order_id || '-' || p.sku"
    )
}
ORDER BY p.replenish_due_at, p.customer_id, p.order_id, p.sku
LIMIT :limit
"""


async def _replenishments(
    session: AsyncSession,
    rule_id: str,
    trigger: Trigger,
    now: datetime,
    after: list[Any] | None,
    limit: int,
) -> tuple[list[JourneyStart], list[Any] | None]:
    params = {
        "rule_id": rule_id,
        "now": now,
        "after_at": datetime.fromisoformat(after[0]) if after else _EPOCH,
        "after_customer": after[1] if after else "",
        "after_order": after[2] if after else "",
        "after_sku": after[3] if after else "",
        "limit": limit,
    }
    rows = await _rows(session, _REPLENISH_SQL, params)
    starts = [
        JourneyStart(
            rule_id=rule_id,
            customer_id=row.customer_id,
            occurrence=f"replenish-{row.order_id}-{row.sku}",
            trigger=REPLENISHMENT_DUE,
            triggered_at=row.replenish_due_at,
            sku=row.sku,
            context={
                "product": {
                    "sku": row.sku,
                    "product_id": row.product_id,
                    "name": row.name,
                    "category": row.category,
                    "quantity": row.quantity,
                    "replenish_after_days": row.replenish_after_days,
                },
                "order": {
                    "id": row.order_id,
                    "purchased_at": _iso(row.purchased_at),
                    "delivered_at": _iso(row.delivered_at),
                },
            },
        )
        for row in rows
    ]
    last = (
        [
            rows[-1].replenish_due_at.isoformat(),
            rows[-1].customer_id,
            rows[-1].order_id,
            rows[-1].sku,
        ]
        if rows
        else None
    )
    return starts, last


DUE_QUERIES: dict[str, DueQuery] = {
    BIRTHDAY: _birthdays,
    PURCHASE_ANNIVERSARY: _anniversaries,
    INACTIVITY: _inactive,
    REPLENISHMENT_DUE: _replenishments,
}
