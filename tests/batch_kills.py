"""SIGKILLing a worker in the middle of a batch that starts journeys (a fan-out page, a
sweep batch) at moments read from the claims the batch writes (services/journeys/starts.py:
claims committed, then the journeys started, then the claims marked started), starting a
new worker after it, and reading what the kill cut off."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from tests.processes import WorkerProcess

# after-claims: the moment a batch's claims are committed (its starts under way, or not
# begun). mid-starts: some of the batch's journeys started, none marked (a batch starting
# many: its starts take a while). before-marks: every journey of the batch started, its
# claims not yet marked (a row lock taken here on its claims holds the marks back).
# between-runs: right after the last batch of a run is marked, where the workflow
# continues as new.
HOWS = ("after-claims", "mid-starts", "before-marks", "between-runs")


@dataclass
class Kill:
    how: str
    at: datetime  # when the worker died
    claimed: int
    unmarked: int  # claims not marked started when it died
    begun: int  # of those, journeys already started

    def __str__(self) -> str:
        return (
            f"{self.how} ({self.claimed} claimed, {self.unmarked} not marked started,"
            f" {self.begun} of them with their journey started)"
        )


_COUNTS = "SELECT count(*), count(started_at) FROM journey_claims WHERE rule_id = %s"
_UNMARKED = "SELECT workflow_id FROM journey_claims WHERE rule_id = %s AND started_at IS NULL"


async def existing(client: Client, workflow_ids: list[str]) -> int:
    """How many of these workflows Temporal has (asked one by one: no visibility lag)."""
    gate = asyncio.Semaphore(20)

    async def one(workflow_id: str) -> int:
        async with gate:
            try:
                await client.get_workflow_handle(workflow_id).describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return 0
                raise
            return 1

    return sum(await asyncio.gather(*(one(w) for w in workflow_ids)))


async def kill(
    worker: WorkerProcess,
    client: Client,
    database_url: str,
    rule_id: str,
    how: str,
    *,
    claimed: int = 0,
    started: int = 0,
    within: float = 300,
) -> Kill:
    """Once the rule has ``claimed`` claims (mid-batch kills) or ``started`` marked ones
    (between-runs), SIGKILL the worker at the moment ``how`` names, then start a new one."""
    assert how in HOWS, how
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        while time.monotonic() < deadline:
            async with conn.transaction():
                counts = await (await conn.execute(_COUNTS, (rule_id,))).fetchone()
                assert counts is not None
                if how == "between-runs":
                    hit = counts[1] >= started
                else:
                    hit = counts[0] >= claimed and counts[0] > counts[1]
                if hit and how == "mid-starts":
                    ids = await (await conn.execute(_UNMARKED, (rule_id,))).fetchall()
                    sample = random.sample([i[0] for i in ids], min(len(ids), 10))
                    hit = await existing(client, sample) > 0
                if hit and how == "before-marks":
                    # Lock the batch's claims: its marks wait for this transaction. Locked
                    # too late (the marks won), nothing comes back: try the next batch.
                    ids = await (
                        await conn.execute(_UNMARKED + " FOR UPDATE", (rule_id,))
                    ).fetchall()
                    hit = bool(ids) and await _all_started(client, [i[0] for i in ids])
                if hit:
                    await asyncio.to_thread(worker.kill)
                    at = datetime.now(UTC)
                    counts = await (await conn.execute(_COUNTS, (rule_id,))).fetchone()
                    assert counts is not None
                    ids = await (await conn.execute(_UNMARKED, (rule_id,))).fetchall()
                    pending = [i[0] for i in ids]
                    outcome = Kill(
                        how, at, counts[0], len(pending), await existing(client, pending)
                    )
                    break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError(f"no moment to kill {how!r} came within {within}s")
    # The locks are gone with the transaction; the dead worker's marks die with its
    # connection. A new worker takes over.
    await asyncio.sleep(0.5)
    await asyncio.to_thread(worker.start)
    print(f"[batch-kill {outcome.at:%H:%M:%S.%f}] worker SIGKILLed {outcome}", flush=True)
    return outcome


async def _all_started(client: Client, workflow_ids: list[str], within: float = 60) -> bool:
    """Wait until the batch has started every journey of these claims (its marks held)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await existing(client, workflow_ids) == len(workflow_ids):
            return True
        await asyncio.sleep(0.05)
    return False


async def retried_after_heartbeat_timeout(client: Client, workflow_id: str) -> int:
    """Activity attempts of a workflow (every run of its continue-as-new chain) that began
    because the previous attempt stopped heartbeating: a worker died under it."""
    retried = 0
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                continue
            started = event.activity_task_started_event_attributes
            timeout = started.last_failure.timeout_failure_info
            if started.attempt > 1 and timeout.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT:
                retried += 1
    return retried


async def runs(client: Client, workflow_id: str) -> list[Any]:
    """The runs of a continue-as-new chain, oldest first."""
    found = [e async for e in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    return sorted(found, key=lambda e: e.start_time)
