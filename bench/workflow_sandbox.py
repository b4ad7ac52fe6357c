"""What the workflow sandbox costs per run: ``python bench/workflow_sandbox.py [--journeys N]``.

Every workflow run (and, for orders, whose worker keeps no cache, every workflow task)
gets a fresh sandbox that re-imports the workflow's modules not passed through
(worker.py ``_RESTRICTIONS``). Prints, for the worker's restrictions and for the old ones
that passed workflows/, services/, db/ … through as well:

  sandbox    CPU and wall time to create one workflow's sandbox, per workflow type: the
             import and class set-up each run pays before its first activation
  journeys   (with ``--journeys N``) N lifecycle journeys started on a dev server and run to
             their end by the production worker (build_worker) in this process: process CPU
             and wall time per journey, client, worker and activity included. Each is
             refused at entry (no such rule), so it is one workflow task, one activity and
             a completion: the sandbox is as large a share of it as it can be.

The journeys need PostgreSQL: DATABASE_URL's server (a scratch database is created and
dropped). Figures depend on bytecode caching: with PYTHONDONTWRITEBYTECODE set, every
sandbox compiles the re-imported sources again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from temporalio import workflow
from temporalio.api.common.v1.message_pb2 import Payloads
from temporalio.api.failure.v1.message_pb2 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._runner import _fake_info

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import worker  # noqa: E402
from config.settings import Environment, Settings  # noqa: E402
from contracts import search_attributes  # noqa: E402
from contracts.lifecycle import LifecycleInput  # noqa: E402
from contracts.names import LIFECYCLE_WORKFLOW  # noqa: E402
from db.engine import create_engine, create_sessionmaker  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from embedded.binaries import temporal_cli  # noqa: E402
from workflows.registry import ALL  # noqa: E402

RESTRICTIONS = {
    "worker.py": worker._RESTRICTIONS,
    "old": SandboxRestrictions.default.with_passthrough_modules(
        "workflows", "contracts", "services", "config", "db", "channels", "payments"
    ),
}


def _details(cls: type) -> WorkflowInstanceDetails:
    # What SandboxedWorkflowRunner.prepare_workflow builds to validate a workflow class.
    return WorkflowInstanceDetails(
        payload_converter_factory=DataConverter.default._new_payload_converter,
        failure_converter_class=DataConverter.default.failure_converter_class,
        interceptor_classes=[],
        defn=workflow._Definition.must_from_class(cls),
        info=_fake_info,
        randomness_seed=-1,
        extern_functions={},
        disable_eager_activity_execution=False,
        worker_level_failure_exception_types=[],
        patch_activation_callback=None,
        last_completion_result=Payloads(),
        last_failure=Failure(),
    )


async def sandboxes(runs: int) -> None:
    print(f"sandbox: one workflow's sandbox created, mean of {runs}")
    for label, restrictions in RESTRICTIONS.items():
        runner = SandboxedWorkflowRunner(restrictions=restrictions)
        for cls in ALL:
            details = _details(cls)
            runner.create_instance(details)  # the first one also imports into this process
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(runs):
                runner.create_instance(details)
            cpu_ms = (time.process_time() - cpu) / runs * 1000
            wall_ms = (time.perf_counter() - wall) / runs * 1000
            print(
                f"  {label:10} {details.defn.name:18} cpu {cpu_ms:6.2f} ms   wall {wall_ms:6.2f} ms"
            )


def _scratch_database(admin: str) -> tuple[str, str]:
    admin = admin.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"sutra_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else ""), name


async def journeys(count: int, concurrency: int) -> None:
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        sys.exit("--journeys needs DATABASE_URL (a PostgreSQL server to make a database on)")
    url, name = _scratch_database(admin)
    try:
        upgrade(url)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            data_converter=pydantic_data_converter,
            search_attributes=search_attributes.ALL,
            dev_server_log_level="error",
        )
        try:
            print(f"journeys: {count} started and run to their end, {concurrency} at a time")
            for label, restrictions in RESTRICTIONS.items():
                await _journeys(env, url, label, restrictions, count, concurrency)
        finally:
            await env.shutdown()
    finally:
        with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _journeys(
    env: WorkflowEnvironment,
    database_url: str,
    label: str,
    restrictions: SandboxRestrictions,
    count: int,
    concurrency: int,
) -> None:
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        env=Environment.test,
        database_url=database_url,
        temporal_address=env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
    )
    engine = create_engine(settings)
    worker._RESTRICTIONS = restrictions  # build_worker reads it when it builds the runner
    workers = worker.build_worker(env.client, task_queue, create_sessionmaker(engine), settings)
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def one(i: int) -> None:
        started = time.perf_counter()
        await env.client.execute_workflow(
            LIFECYCLE_WORKFLOW,
            LifecycleInput(
                rule_id=f"bench_no_such_rule_{label}",
                customer_id=f"c{i}",
                trigger="customer.created",
                triggered_at=datetime.now(UTC),
            ),
            id=f"bench/{task_queue}/{i}",
            task_queue=task_queue,
        )
        latencies.append(time.perf_counter() - started)

    async def runner() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    async with workers:
        for i in range(3):  # warm: imports, connections
            await one(count + i)
        latencies.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(concurrency)))
        cpu_ms = (time.process_time() - cpu) / count * 1000
        wall_s = time.perf_counter() - wall
    await engine.dispose()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
    print(
        f"  {label:10} cpu {cpu_ms:6.2f} ms/journey   {count / wall_s:6.1f} journeys/s   "
        f"latency p50 {p50:6.1f} ms  p95 {p95:6.1f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    await sandboxes(args.runs)
    if args.journeys:
        await journeys(args.journeys, args.concurrency)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="sandboxes per workflow type")
    parser.add_argument("--journeys", type=int, default=0, help="journeys to start (0: none)")
    parser.add_argument("--concurrency", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
