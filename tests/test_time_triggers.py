"""Time triggers: the hourly sweep finds due customers in PostgreSQL and starts exactly one
journey per occurrence — over 20,000 customers (5,000 in make test) with the sweep killed
halfway and run again, on birthdays at 10:00 in each customer's own time zone, and for
replenishment and win-back (a new order opens a new spell)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.experiments import ExperimentActivities
from activities.sweeps import SweepActivities
from config.settings import Environment, Settings
from contracts.lifecycle import LifecycleInput
from contracts.names import SWEEP_WORKFLOW
from contracts.rules import RuleDefinition
from contracts.sweeps import SweepInput, SweepTotals
from db.models import Customer, CustomerStats, JourneyClaim, Message, ProductPurchase
from services.journeys import rules
from services.journeys.schedules import TIME_TRIGGER_SCHEDULE, ensure_time_trigger_schedule
from worker import build_worker
from workflows.time_trigger_sweep import TimeTriggerSweep

ROOT = Path(__file__).resolve().parent.parent
ACTOR = rules.Actor(key_id=None, name="tests")
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


async def _rule(sessionmaker: async_sessionmaker[AsyncSession], definition: dict[str, Any]) -> str:
    definition.setdefault("name", f"test {definition['trigger']['event']}")
    async with sessionmaker() as session, session.begin():
        rule, _ = await rules.create(
            session, RuleDefinition.model_validate(definition), ACTOR, status="active"
        )
    return rule.id


async def _archive(sessionmaker: async_sessionmaker[AsyncSession], rule_id: str) -> None:
    """Tests share a database: a rule left active would sweep into later tests."""
    async with sessionmaker() as session, session.begin():
        await rules.transition(session, rule_id, "archived", ACTOR)


async def _claims(
    sessionmaker: async_sessionmaker[AsyncSession], rule_id: str
) -> list[JourneyClaim]:
    async with sessionmaker() as session:
        return list(
            await session.scalars(select(JourneyClaim).where(JourneyClaim.rule_id == rule_id))
        )


def _journeys(task_queue: str) -> str:
    return f"{task_queue}-journeys"


async def _claim_count(sessionmaker: async_sessionmaker[AsyncSession], rule_id: str) -> int:
    async with sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(JourneyClaim).where(JourneyClaim.rule_id == rule_id)
        )
        return int(count or 0)


async def _sweep(client: Client, task_queue: str, **values: Any) -> SweepTotals:
    return await client.execute_workflow(
        SWEEP_WORKFLOW,
        SweepInput(**values),
        id=f"time-triggers/test-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=SweepTotals,
    )


def _sweep_worker(
    client: Client, task_queue: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> Worker:
    """The sweep alone, starting journeys on a queue of their own that no worker polls: the
    thousands of journeys wait there instead of all running on this 2-core machine — what
    is under test is that each is started once."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[TimeTriggerSweep],
        activities=[
            *SweepActivities(client, sessionmaker, _journeys(task_queue)).all(),
            *ExperimentActivities(sessionmaker).all(),
        ],
    )


# --- 20,000 customers (5,000 in make test), killed halfway ---------------------------------

# The same sweep worker in a process of its own, so that it can be SIGKILLed mid-batch.
_WORKER_PROCESS = """
import asyncio, os
from temporalio.worker import Worker
from activities.experiments import ExperimentActivities
from activities.sweeps import SweepActivities
from config.settings import get_settings
from db.engine import create_engine, create_sessionmaker
from services.platform.temporal import connect
from workflows.time_trigger_sweep import TimeTriggerSweep

async def main():
    settings = get_settings()
    client = await connect(settings)
    sessionmaker = create_sessionmaker(create_engine(settings))
    queue = settings.temporal_task_queue
    async with Worker(client, task_queue=queue, workflows=[TimeTriggerSweep], activities=[
        *SweepActivities(client, sessionmaker, queue + "-journeys").all(),
        *ExperimentActivities(sessionmaker).all(),
    ]):
        print("worker ready", flush=True)
        await asyncio.Event().wait()

try:
    asyncio.run(main())
finally:
    os._exit(0)
"""


class SweepProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        # Output to a file: a pipe nobody reads would fill up and stall the worker.
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_PROCESS],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.monotonic() + 60
        while "worker ready" not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("sweep worker did not start:\n" + log.read_text())
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


# make soak: the acceptance figure; make test: a quarter of it.
CUSTOMERS = 20_000 if os.environ.get("SUTRA_SOAK") == "1" else 5_000
# Win-back after 3,000 days: nobody else in the shared test database is that far gone.
IDLE_DAYS = 3000


async def _seed_20k(sessionmaker: async_sessionmaker[AsyncSession], prefix: str) -> set[str]:
    """CUSTOMERS customers with orders; 1 in 4 last ordered 3,000-3,049 days ago (due), the
    rest 2,950-2,999 days ago (not yet). Returns the due ids."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text(
                """
                INSERT INTO customers (id, email, timezone, first_seen_at)
                SELECT :prefix || n, :prefix || n || '@example.com', 'Asia/Karachi', now()
                FROM generate_series(0, :count - 1) n
                """
            ),
            {"prefix": prefix, "count": CUSTOMERS},
        )
        await session.execute(
            text(
                """
                INSERT INTO customer_stats (customer_id, orders_count, last_order_at)
                SELECT :prefix || n, 1, now() - make_interval(days =>
                    CASE WHEN n % 4 = 0 THEN :idle + n % 50 ELSE :idle - 50 + n % 50 END,
                    secs => n % 3600)
                FROM generate_series(0, :count - 1) n
                """
            ),
            {"prefix": prefix, "count": CUSTOMERS, "idle": IDLE_DAYS},
        )
    return {f"{prefix}{n}" for n in range(CUSTOMERS) if n % 4 == 0}


async def _count_journeys(client: Client, rule_id: str, expected: int) -> int:
    """Journeys of the rule the server knows of (visibility catches up within seconds)."""
    count = -1
    for _ in range(100):
        count = (await client.count_workflows(f'RuleId = "{rule_id}"')).count
        if count == expected:
            break
        await asyncio.sleep(0.2)
    return count


async def test_a_sweep_killed_halfway_and_run_again_starts_one_journey_per_due_customer(
    dev_server: WorkflowEnvironment,
    database_url: str,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    client = dev_server.client
    prefix = f"k{uuid.uuid4().hex[:6]}_"
    due = await _seed_20k(sessionmaker, prefix)
    rule_id = await _rule(
        sessionmaker,
        {
            "trigger": {"event": "inactivity", "after": f"P{IDLE_DAYS}D"},
            "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUTRA_")}
    env.update(
        DATABASE_URL=database_url,
        SUTRA_ENV="test",
        SUTRA_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        SUTRA_TEMPORAL_TASK_QUEUE=task_queue,
    )
    began = time.monotonic()
    process = SweepProcess(env, tmp_path / "sweep-worker.log")
    try:
        first = await client.start_workflow(
            SWEEP_WORKFLOW,
            SweepInput(only_rules=[rule_id]),
            id=f"time-triggers/test-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        # Halfway: the worker dies mid-batch, and the run is given up for dead.
        for _ in range(2000):
            if await _claim_count(sessionmaker, rule_id) >= len(due) // 2:
                break
            await asyncio.sleep(0.02)
        process.kill()
        await first.terminate("killed halfway")
    finally:
        process.kill()
    at_kill = [c for c in await _claims(sessionmaker, rule_id) if c.customer_id.startswith(prefix)]
    assert len(due) // 2 <= len(at_kill) < len(due)

    # The next run (the schedule's next tick) on a fresh worker.
    async with _sweep_worker(client, task_queue, sessionmaker):
        second = await asyncio.wait_for(_sweep(client, task_queue, only_rules=[rule_id]), 180)
    elapsed = time.monotonic() - began

    # (Only this test's customers are ever 3,000 days idle as of now, but be exact anyway.)
    final = [c for c in await _claims(sessionmaker, rule_id) if c.customer_id.startswith(prefix)]
    assert sorted(c.customer_id for c in final) == sorted(due)  # each due one, once
    assert all(c.started_at is not None for c in final)
    assert {c.occurrence.startswith("inactive-since-") for c in final} == {True}
    # The rerun skipped what the first run had started, and started the rest.
    assert second.claimed == len(due) - len(at_kill)
    # ... and started the claims the kill had cut off before their start.
    cut_off = sum(1 for c in at_kill if c.started_at is None)
    assert second.started + second.already == second.claimed + cut_off
    assert await _count_journeys(client, rule_id, len(due)) == len(due)
    sample = sorted(due)[::997]
    for customer_id in sample:
        [claim] = [c for c in final if c.customer_id == customer_id]
        described = await client.get_workflow_handle(claim.workflow_id).describe()
        assert described.workflow_type == "LifecycleJourney"
        assert described.status == WorkflowExecutionStatus.RUNNING  # waiting for its worker
    # A third run finds nothing left to do.
    async with _sweep_worker(client, task_queue, sessionmaker):
        third = await _sweep(client, task_queue, only_rules=[rule_id])
    assert (third.found, third.claimed, third.started) == (0, 0, 0)
    await _archive(sessionmaker, rule_id)
    print(
        f"\n{CUSTOMERS} customers' sweep: {len(due)} due, {len(at_kill)} claimed at the kill, "
        f"rerun started "
        f"{second.started} ({cut_off} cut off by the kill) in {second.batches} batches; "
        f"{elapsed:.1f}s from the first start to the end of the rerun"
    )


# --- birthdays at 10:00 local ----------------------------------------------------------

KARACHI = ZoneInfo("Asia/Karachi")
NEW_YORK = ZoneInfo("America/New_York")


def _born_on(day: date) -> date:
    return date(1992 if (day.month, day.day) == (2, 29) else 1990, day.month, day.day)


@pytest.fixture
async def skipping_worker(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Settings]:
    settings = Settings(
        env=Environment.test, database_url=database_url, temporal_task_queue=task_queue
    )
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield settings


async def test_birthdays_are_greeted_at_ten_in_each_customers_own_time_zone(
    time_skipping: WorkflowEnvironment,
    skipping_worker: Settings,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    env = time_skipping
    start = await env.get_current_time()
    # A day whose Karachi morning starts within the next day of simulated time.
    birthday = (start + timedelta(hours=29)).date()
    ids = {KARACHI: f"bk_{uuid.uuid4().hex[:8]}", NEW_YORK: f"bn_{uuid.uuid4().hex[:8]}"}
    async with sessionmaker() as session, session.begin():
        for zone, customer_id in ids.items():
            session.add(
                Customer(
                    id=customer_id,
                    email=f"{customer_id}@example.com",
                    name="Ayesha",
                    locale="en",
                    timezone=zone.key,
                    birthday=_born_on(birthday),
                    consent_email=True,
                    first_seen_at=start,
                )
            )
    rule_id = await _rule(
        sessionmaker,
        {
            "trigger": {"event": "birthday", "at": "10:00"},
            "conditions": {"field": "customer.id", "op": "in", "value": list(ids.values())},
            "steps": [
                {"wait_until": "10:00"},
                {
                    "send": {
                        "channels": ["email"],
                        "template": "birthday",
                        "incentive": {"percent_off": 10},
                    }
                },
            ],
        },
    )
    # Hourly sweeps from the hour before Karachi's birthday begins (18:00 UTC the day
    # before) until New York's has ended and the next day is well under way everywhere.
    first_tick = datetime.combine(birthday - DAY, datetime.min.time(), UTC) + timedelta(hours=18)
    started: dict[datetime, int] = {}
    for tick in (first_tick + n * HOUR for n in range(44)):
        await env.sleep((tick - await env.get_current_time()).total_seconds())
        # The schedule's tick: the sweep runs "now", the clock does not skip ahead meanwhile.
        with env.auto_time_skipping_disabled():
            totals = await _sweep(env.client, task_queue, only_rules=[rule_id])
        started[tick] = totals.started
    try:
        async with sessionmaker() as session:
            sent = list(
                await session.scalars(
                    select(Message).where(
                        Message.rule_id == rule_id, Message.status.in_(("sent", "delivered"))
                    )
                )
            )
        claims = await _claims(sessionmaker, rule_id)
        for zone, customer_id in ids.items():
            [message] = [m for m in sent if m.customer_id == customer_id]
            assert message.template == "birthday"
            assert message.sent_at is not None
            local = message.sent_at.astimezone(zone)
            assert local.date() == birthday, (zone, local)
            ten = datetime.combine(birthday, datetime.min.time(), zone) + timedelta(hours=10)
            assert abs(local - ten) <= timedelta(minutes=1), (zone, local)
            mine = [c for c in claims if c.customer_id == customer_id]
            assert [c.occurrence for c in mine] == [f"birthday-{birthday.year}"]

        # Each journey was started by the first sweep of the customer's local birthday;
        # every later sweep, the next day's too, started nothing.
        def first_tick_of_the_day(zone: ZoneInfo) -> datetime:
            midnight = datetime.combine(birthday, datetime.min.time(), zone).astimezone(UTC)
            return min(tick for tick in started if tick >= midnight)

        expected: dict[datetime, int] = {}
        for zone in ids:
            tick = first_tick_of_the_day(zone)
            expected[tick] = expected.get(tick, 0) + 1
        assert {tick: n for tick, n in started.items() if n} == expected
        assert max(started) > datetime.combine(birthday + DAY, datetime.min.time(), NEW_YORK)
    finally:
        await _archive(sessionmaker, rule_id)
        for claim in await _claims(sessionmaker, rule_id):
            with contextlib.suppress(RPCError):  # ended on its own
                await env.client.get_workflow_handle(claim.workflow_id).terminate()


# --- replenishment and win-back selection -----------------------------------------------


async def test_replenishment_reminds_of_delivered_lines_not_bought_again_once_each(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    client = dev_server.client
    now = datetime.now(UTC)
    c = f"r_{uuid.uuid4().hex[:8]}"

    def line(order: str, sku: str, **values: Any) -> ProductPurchase:
        bought = values.pop("purchased_at", now - timedelta(days=40))
        return ProductPurchase(
            order_id=f"{c}_{order}",
            sku=sku,
            customer_id=c,
            name=f"Product {sku}",
            quantity=1,
            purchased_at=bought,
            replenish_after_days=30,
            **{
                "delivered_at": bought + timedelta(days=3),
                "replenish_due_at": bought + timedelta(days=33),
                **values,
            },
        )

    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                line("o1", "TEA"),  # due
                line("o1", "SOAP"),  # due, same order, another product
                line("o2", "OIL", delivered_at=None, replenish_due_at=now - DAY),  # undelivered
                line("o3", "RICE", rebought_at=now - DAY),  # bought again
                line("o4", "SALT"),  # bought again below, rebought_at not (yet) filled in
                line("o5", "SALT", purchased_at=now - timedelta(days=2), replenish_due_at=None),
                line("o6", "MILK", purchased_at=now - timedelta(days=10)),  # due in 23 days
            ]
        )
    rule_id = await _rule(
        sessionmaker,
        {
            "trigger": {"event": "replenishment_due"},
            "conditions": {"field": "customer.id", "op": "eq", "value": c},
            "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
        },
    )
    try:
        async with _sweep_worker(client, task_queue, sessionmaker):
            await _sweep(client, task_queue, only_rules=[rule_id], now=now)
            mine = [x for x in await _claims(sessionmaker, rule_id) if x.customer_id == c]
            assert sorted(x.occurrence for x in mine) == [
                f"replenish-{c}_o1-SOAP",
                f"replenish-{c}_o1-TEA",
            ]
            handle = client.get_workflow_handle(f"journey/{rule_id}/{c}/replenish-{c}_o1-TEA")
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            # An hour later: the same two are still due, and get no second journey; a month
            # later the milk is due too.
            again = await _sweep(client, task_queue, only_rules=[rule_id], now=now + HOUR)
            # (In pages of one line, one page per run: keyset paging across continue-as-new.)
            later = await _sweep(
                client,
                task_queue,
                only_rules=[rule_id],
                now=now + 30 * DAY,
                limit=1,
                batches_per_run=1,
            )
        mine = [x for x in await _claims(sessionmaker, rule_id) if x.customer_id == c]
        assert sorted(x.occurrence for x in mine) == [
            f"replenish-{c}_o1-SOAP",
            f"replenish-{c}_o1-TEA",
            f"replenish-{c}_o6-MILK",
        ]
        assert later.started >= 1
        assert later.batches >= 2  # the totals crossed runs
        assert again.batches >= 1
    finally:
        await _archive(sessionmaker, rule_id)


async def test_win_back_starts_once_per_spell_and_every_order_restarts_the_clock(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    client = dev_server.client
    # Sweeps "as of" 1990, when only these customers had ordered: the rest of the shared
    # test database is not yet inactive then.
    now = datetime(1990, 3, 1, 12, tzinfo=UTC)
    gone, recent, never = (f"w{n}_{uuid.uuid4().hex[:8]}" for n in range(3))
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                CustomerStats(customer_id=gone, orders_count=2, last_order_at=now - 61 * DAY),
                CustomerStats(customer_id=recent, orders_count=1, last_order_at=now - 50 * DAY),
                CustomerStats(customer_id=never, orders_count=0, last_order_at=None),
            ]
        )
    rule_id = await _rule(
        sessionmaker,
        {
            "trigger": {"event": "inactivity", "after": "P60D"},
            "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
        },
    )
    ours = {gone, recent, never}

    async def occurrences() -> list[tuple[str, str]]:
        claims = await _claims(sessionmaker, rule_id)
        return sorted((x.customer_id, x.occurrence) for x in claims if x.customer_id in ours)

    def spell(last_order: datetime) -> str:
        return f"inactive-since-{last_order:%Y-%m-%dT%H:%M:%SZ}"

    try:
        async with _sweep_worker(client, task_queue, sessionmaker):
            await _sweep(client, task_queue, only_rules=[rule_id], now=now)
            assert await occurrences() == [(gone, spell(now - 61 * DAY))]
            # Still gone the next day: no second win-back for the same spell.
            await _sweep(client, task_queue, only_rules=[rule_id], now=now + DAY)
            assert await occurrences() == [(gone, spell(now - 61 * DAY))]
            # The win-back worked: a new order on day 2. Nothing until 60 days after it...
            async with sessionmaker() as session, session.begin():
                stats = await session.get(CustomerStats, gone)
                assert stats is not None
                stats.last_order_at = now + 2 * DAY
            await _sweep(client, task_queue, only_rules=[rule_id], now=now + 61 * DAY)
            assert await occurrences() == sorted(
                [(gone, spell(now - 61 * DAY)), (recent, spell(now - 50 * DAY))]
            )
            # ... and then a new spell, a new win-back.
            await _sweep(client, task_queue, only_rules=[rule_id], now=now + 62 * DAY + HOUR)
            await _sweep(client, task_queue, only_rules=[rule_id], now=now + 63 * DAY)
        assert await occurrences() == sorted(
            [
                (gone, spell(now - 61 * DAY)),
                (gone, spell(now + 2 * DAY)),
                (recent, spell(now - 50 * DAY)),
            ]
        )
        async with sessionmaker() as session:
            started = await session.scalar(
                select(func.count())
                .select_from(JourneyClaim)
                .where(
                    JourneyClaim.rule_id == rule_id,
                    JourneyClaim.customer_id.in_(ours),
                    JourneyClaim.started_at.is_not(None),
                )
            )
        assert started == 3
        handle = client.get_workflow_handle(f"journey/{rule_id}/{gone}/{spell(now + 2 * DAY)}")
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    finally:
        await _archive(sessionmaker, rule_id)
        # Inactive since 1990: every later inactivity sweep in this database would find them.
        async with sessionmaker() as session, session.begin():
            await session.execute(delete(CustomerStats).where(CustomerStats.customer_id.in_(ours)))


async def test_a_purchase_anniversary_is_found_on_its_local_day_once_a_year(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    client = dev_server.client
    # 09:00 UTC on 5 March 1991 is 14:00 in Karachi: these customers' first orders are the
    # only ones in the shared test database that old.
    now = datetime(1991, 3, 5, 9, tzinfo=UTC)
    due, tomorrow, too_new = (f"a{n}_{uuid.uuid4().hex[:8]}" for n in range(3))

    def first_order(at: datetime) -> dict[str, Any]:
        return {"first_order_at": at, "first_order_md": at.month * 100 + at.day}

    async with sessionmaker() as session, session.begin():
        for customer_id in (due, tomorrow, too_new):
            session.add(
                Customer(id=customer_id, timezone="Asia/Karachi", first_seen_at=now - 800 * DAY)
            )
        await session.flush()
        session.add_all(
            [
                CustomerStats(customer_id=due, orders_count=3, **first_order(now - 730 * DAY)),
                CustomerStats(customer_id=tomorrow, orders_count=1, **first_order(now - 729 * DAY)),
                CustomerStats(customer_id=too_new, orders_count=1, **first_order(now - 30 * DAY)),
            ]
        )
    rule_id = await _rule(
        sessionmaker,
        {
            "trigger": {"event": "purchase_anniversary", "at": "10:00"},
            "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
        },
    )
    ours = {due, tomorrow, too_new}
    try:
        async with _sweep_worker(client, task_queue, sessionmaker):
            await _sweep(client, task_queue, only_rules=[rule_id], now=now)
            await _sweep(client, task_queue, only_rules=[rule_id], now=now + HOUR)
        claims = [c for c in await _claims(sessionmaker, rule_id) if c.customer_id in ours]
        assert [(c.customer_id, c.occurrence) for c in claims] == [(due, "anniversary-1991")]
        assert claims[0].started_at is not None
        handle = client.get_workflow_handle(f"journey/{rule_id}/{due}/anniversary-1991")
        started = (await handle.fetch_history()).events[0]
        [journey] = await client.data_converter.decode(
            started.workflow_execution_started_event_attributes.input.payloads, [LifecycleInput]
        )
        assert journey.context["occasion"]["years"] == 2
        # 10:00 in Karachi on the anniversary, where the rule says "at": "10:00".
        assert journey.triggered_at == datetime(1991, 3, 5, 5, tzinfo=UTC)
    finally:
        await _archive(sessionmaker, rule_id)


# --- the schedule ---------------------------------------------------------------------------


async def test_the_worker_keeps_an_hourly_schedule_that_runs_the_sweep(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    client = dev_server.client
    await ensure_time_trigger_schedule(client, settings)
    await ensure_time_trigger_schedule(client, settings)  # every worker start: an update
    handle = client.get_schedule_handle(TIME_TRIGGER_SCHEDULE)
    try:
        described = await handle.describe()
        schedule = described.schedule
        assert [i.every for i in schedule.spec.intervals] == [HOUR]
        assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert isinstance(schedule.action, ScheduleActionStartWorkflow)
        assert schedule.action.workflow == SWEEP_WORKFLOW
        assert schedule.action.task_queue == task_queue
        # A tick now: a sweep runs to the end on the worker.
        async with _sweep_worker(client, task_queue, sessionmaker):
            await handle.trigger()
            for _ in range(100):
                runs = (await handle.describe()).info.recent_actions
                if runs:
                    break
                await asyncio.sleep(0.1)
            run = runs[0].action
            assert isinstance(run, ScheduleActionExecutionStartWorkflow)
            sweep = client.get_workflow_handle(run.workflow_id)
            await sweep.result()
            finished = await sweep.describe()
        assert finished.workflow_type == SWEEP_WORKFLOW
        assert finished.status == WorkflowExecutionStatus.COMPLETED
    finally:
        await handle.delete()
    # Turned off: the schedule is removed, and removing it again is no error.
    off = settings.model_copy(update={"time_trigger_sweep_every": timedelta(0)})
    await ensure_time_trigger_schedule(client, off)
    with pytest.raises(RPCError):
        await handle.describe()
