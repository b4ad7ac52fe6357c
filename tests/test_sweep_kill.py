"""A time-trigger sweep whose worker is SIGKILLed mid-batch and again where the sweep
continues as new; the run is not terminated: a new worker process takes it over, the
killed batch is retried there, and each due customer gets exactly one journey.

The worker is ``python -m tests.sweep_worker_process``: the sweep and its activities as
the production worker wires them, starting the journeys on a queue no worker polls (they
wait there; what is under test is that each is started once). The customers are win-back
due: 4,000 days and more since their last order, which no other test's customers are.
``SUTRA_SOAK=1``: 20,000 due customers, five kills.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from contracts.names import SWEEP_WORKFLOW
from contracts.rules import RuleDefinition
from contracts.sweeps import SweepInput, SweepTotals
from services.journeys import rules
from tests.batch_kills import Kill, kill, retried_after_heartbeat_timeout, runs
from tests.processes import WorkerProcess, processes, sutra_env

SOAK = os.environ.get("SUTRA_SOAK") == "1"
DUE, BATCH = (20_000, 500) if SOAK else (1_200, 40)
BATCHES_PER_RUN = 10
IDLE_DAYS = 4000
ACTOR = rules.Actor(key_id=None, name="tests")
# Where the worker is SIGKILLed (tests/batch_kills.py), and once what share of the due
# customers is claimed; between-runs: after the last batch of the sweep's first run.
KILLS: list[tuple[str, float]] = (
    [
        ("after-claims", 0.1),
        ("mid-starts", 0.2),
        ("between-runs", 0.0),
        ("before-marks", 0.55),
        ("mid-starts", 0.8),
    ]
    if SOAK
    else [("mid-starts", 0.15), ("between-runs", 0.0)]
)


async def _seed(sessionmaker: async_sessionmaker[AsyncSession], prefix: str) -> set[str]:
    """DUE customers 4,000-4,049 days since their last order, and half as many again a few
    days short of it. Returns the due ids."""
    count = DUE + DUE // 2
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO customers (id, email, timezone, first_seen_at)"
                " SELECT :prefix || n, :prefix || n || '@example.com', 'Asia/Karachi', now()"
                " FROM generate_series(0, :count - 1) n"
            ),
            {"prefix": prefix, "count": count},
        )
        await session.execute(
            text(
                "INSERT INTO customer_stats (customer_id, orders_count, last_order_at)"
                " SELECT :prefix || n, 1, now() - make_interval(days =>"
                "   CASE WHEN n < :due THEN :idle + n % 50 ELSE :idle - 1 - n % 50 END,"
                "   secs => n % 3600)"
                " FROM generate_series(0, :count - 1) n"
            ),
            {"prefix": prefix, "count": count, "due": DUE, "idle": IDLE_DAYS},
        )
    return {f"{prefix}{n}" for n in range(DUE)}


async def _forget(sessionmaker: async_sessionmaker[AsyncSession], prefix: str) -> None:
    """Tests share a database: customers this long gone would be due for later tests' rules."""
    async with sessionmaker() as session, session.begin():
        params = {"pattern": f"{prefix}%"}
        await session.execute(
            text("DELETE FROM customer_stats WHERE customer_id LIKE :pattern"), params
        )
        await session.execute(text("DELETE FROM customers WHERE id LIKE :pattern"), params)


def _claims(database_url: str, rule_id: str) -> list[tuple[str, bool, str, str]]:
    """(customer, started, occurrence, workflow id) of each of the rule's claims."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT customer_id, started_at IS NOT NULL, occurrence, workflow_id"
            " FROM journey_claims WHERE rule_id = %s",
            (rule_id,),
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def _journeys(temporal: Client, rule_id: str) -> int | None:
    count = (await temporal.count_workflows(f'RuleId = "{rule_id}"')).count
    return count if count >= DUE else None


@pytest.mark.timeout(1500 if SOAK else 300)
async def test_a_sweep_whose_worker_is_killed_mid_batch_starts_one_journey_per_due_customer(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    temporal = dev_server.client
    folder = Path(tempfile.mkdtemp(prefix="sutra-sweep-kill-"))
    prefix = f"sk{uuid.uuid4().hex[:6]}_"
    due = await _seed(sessionmaker, prefix)
    async with sessionmaker() as session, session.begin():
        rule, _ = await rules.create(
            session,
            RuleDefinition.model_validate(
                {
                    "name": f"win-back {prefix}",
                    "trigger": {"event": "inactivity", "after": f"P{IDLE_DAYS}D"},
                    "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
                }
            ),
            ACTOR,
            status="active",
        )
        rule_id = rule.id
    passed = False
    try:
        with processes() as started:
            env = sutra_env(database_url, temporal.service_client.config.target_host, task_queue)
            worker = started.add(WorkerProcess(folder, env, module="tests.sweep_worker_process"))
            worker.start()
            began = time.monotonic()
            handle = await temporal.start_workflow(
                SWEEP_WORKFLOW,
                SweepInput(only_rules=[rule_id], limit=BATCH, batches_per_run=BATCHES_PER_RUN),
                id=f"time-triggers/test-kill-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                result_type=SweepTotals,
            )
            kills: list[Kill] = []
            for how, share in KILLS:
                kills.append(
                    await kill(
                        worker,
                        temporal,
                        database_url,
                        rule_id,
                        how,
                        claimed=int(share * DUE),
                        started=BATCHES_PER_RUN * BATCH,
                    )
                )
            totals = await asyncio.wait_for(handle.result(follow_runs=True), 900)
            swept = time.monotonic() - began

            # Each due customer claimed once, under this spell's occurrence, and started;
            # nobody not yet due; Temporal knows exactly that many journeys of the rule.
            claimed = await asyncio.to_thread(_claims, database_url, rule_id)
            assert sorted(c[0] for c in claimed) == sorted(due)
            assert all(c[1] for c in claimed)
            assert {c[2].startswith("inactive-since-") for c in claimed} == {True}
            journeys = await _eventually_journeys(temporal, rule_id)
            assert journeys == DUE
            for claim in sorted(claimed)[:: max(1, DUE // 7)]:
                described = await temporal.get_workflow_handle(claim[3]).describe()
                assert described.workflow_type == "LifecycleJourney"
                assert described.status == WorkflowExecutionStatus.RUNNING  # for its worker
            chain = await runs(temporal, handle.id)
            assert len(chain) >= 3, "the sweep takes several runs"
            assert chain[0].close_time is not None
            boundary = next(k.at for k in kills if k.how == "between-runs")
            continued = (chain[0].close_time - boundary).total_seconds()
            taken_over = await retried_after_heartbeat_timeout(temporal, handle.id)
            assert taken_over >= sum(1 for k in kills if k.how != "between-runs")
            print(
                f"\n[sweep-kill] {DUE} due customers in batches of {BATCH}, {len(chain)} runs;"
                f" worker SIGKILLed {'; '.join(map(str, kills))}; the first run continued"
                f" as new {continued:+.1f}s from the kill at its end"
                f" ({'on the new worker' if continued > 0 else 'before it'}); batches retried"
                f" on the new worker after a heartbeat timeout: {taken_over}; sweep done in"
                f" {swept:.1f}s ({totals.batches} batches: found {totals.found}, claimed"
                f" {totals.claimed}, started {totals.started}, already started"
                f" {totals.already}); journeys {journeys}, claims {len(claimed)}, duplicates"
                f" {journeys - DUE}; worker starts {worker.starts}"
            )
            passed = True
    finally:
        async with sessionmaker() as session, session.begin():
            await rules.transition(session, rule_id, "archived", ACTOR)
        await _forget(sessionmaker, prefix)
        if passed:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"[sweep-kill] logs kept in {folder}")


async def _eventually_journeys(temporal: Client, rule_id: str) -> int:
    """The rule's journeys as visibility counts them (it catches up within seconds)."""
    deadline = time.monotonic() + 60
    while True:
        count = await _journeys(temporal, rule_id)
        if count is not None or time.monotonic() > deadline:
            return count or (await temporal.count_workflows(f'RuleId = "{rule_id}"')).count
        await asyncio.sleep(0.3)
