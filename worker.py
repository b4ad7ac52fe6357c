"""The Temporal worker: runs Sutra's workflows and activities. ``python worker.py``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.carts import CartActivities
from activities.experiments import ExperimentActivities
from activities.fanout import FanoutActivities
from activities.journeys import JourneyActivities
from activities.lifecycle import LifecycleActivities
from activities.messaging import MessagingActivities
from activities.orders import OrderActivities
from activities.sweeps import SweepActivities
from channels import build_adapters
from config.logging import configure_logging
from config.settings import Settings, get_settings
from db.engine import create_engine, create_sessionmaker
from services.journeys.schedules import ensure_time_trigger_schedule
from services.messaging.send import Messaging
from services.platform import task_failure_log, tracing, worker_metrics
from services.platform.log_context import ActivityLogContext
from services.platform.temporal import connect, ensure_search_attributes, order_task_queue
from services.templating.renderer import Renderer
from workflows.order import OrderWorkflow
from workflows.registry import ALL as WORKFLOWS

log = logging.getLogger("sutra.worker")

HEARTBEAT_THROTTLE = timedelta(seconds=2)

# Every workflow run gets a fresh sandbox that re-imports the modules not passed through.
# Only contracts/ is shared (pydantic models and constants, no state; pydantic and
# temporalio are the SDK's own passthroughs): the workflow's module is re-imported per run,
# what it imports from workflows/ under imports_passed_through() is shared. A sandbox costs
# 1.5-3 ms of CPU (4-11 ms without bytecode caching), a journey some 2 ms more than when
# workflows/, services/ and db/ were passed through too (19 against 17 ms):
# python bench/workflow_sandbox.py --journeys 300. Order workflows keep no cache and pay
# it on every task. Determinism is enforced by the sandbox and proven by the replay tests.
_RESTRICTIONS = SandboxRestrictions.default.with_passthrough_modules("contracts")


class Workers:
    """Sutra's workers, run together: the main one on the task queue, and the order
    workflows' own, which keeps no workflow cache (``services.platform.temporal.order_task_queue``
    says why). Used like a ``temporalio.worker.Worker``: ``async with``, ``run()``."""

    def __init__(self, main: Worker, orders: Worker) -> None:
        self.main = main
        self.orders = orders
        self.all = (main, orders)

    async def __aenter__(self) -> Workers:
        await self.main.__aenter__()
        try:
            await self.orders.__aenter__()
        except BaseException:
            await self.main.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.orders.__aexit__(*exc)
        finally:
            await self.main.__aexit__(*exc)

    async def run(self) -> None:
        await asyncio.gather(*(worker.run() for worker in self.all))

    async def shutdown(self) -> None:
        await asyncio.gather(*(worker.shutdown() for worker in self.all))


def build_worker(
    client: Client,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings | None = None,
    *,
    extra_workflows: Sequence[type] = (),
    order_cache: int = 0,
    **worker_options: Any,
) -> Workers:
    """The production wiring; tests build their workers with this too. ``worker_options``
    go to the main worker; ``order_cache`` is the order workers' workflow cache, none in
    production (a test sets it to show why)."""
    settings = settings or get_settings()
    carts = CartActivities(sessionmaker)
    messaging = MessagingActivities(
        Messaging(settings, sessionmaker, build_adapters(settings), Renderer())
    )
    journeys = JourneyActivities(settings, sessionmaker)
    orders = OrderActivities(settings, sessionmaker)
    activities = [
        carts.prepare_cart,
        messaging.send_message,
        messaging.abandon_message,
        *journeys.all(),
        *orders.all(),
        *ExperimentActivities(sessionmaker).all(),
        *LifecycleActivities(sessionmaker).all(),
        *FanoutActivities(client, task_queue, sessionmaker, settings).all(),
        *SweepActivities(client, sessionmaker, task_queue).all(),
    ]
    # One log line per failing workflow run instead of one per retry; nondeterminism
    # reaches it when the client runs on task_failure_log.worker_runtime().
    task_failure_log.install()
    common: dict[str, Any] = {
        "workflow_runner": SandboxedWorkflowRunner(restrictions=_RESTRICTIONS),
        # A batch activity's beats reach the server every 2 s, well inside its heartbeat
        # timeout (activities/heartbeats.py), however busy this worker is.
        "max_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        "interceptors": [task_failure_log.RunDirectoryInterceptor(), ActivityLogContext()],
        "activities": activities,
    }
    # Orders placed before their queue existed still run here, on the main queue.
    main = Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        **common,
        **{"max_cached_workflows": settings.temporal_workflow_cache, **worker_options},
    )
    order_workers = Worker(
        client,
        task_queue=order_task_queue(settings, task_queue),
        workflows=[OrderWorkflow],
        max_cached_workflows=order_cache,
        **common,
    )
    return Workers(main, order_workers)


async def connect_with_retry(settings: Settings, metrics: PrometheusConfig | None = None) -> Client:
    delay = 1.0
    while True:
        try:
            return await connect(settings, runtime=task_failure_log.worker_runtime(metrics))
        except Exception as exc:  # the server may still be starting
            log.warning(
                "Temporal at %s not reachable (%s); retrying", settings.temporal_address, exc
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    sdk_metrics = None
    if settings.worker_metrics_port:
        try:
            sdk_metrics = worker_metrics.serve(
                settings.worker_metrics_port, settings.worker_metrics_host
            ).sdk
        except OSError as exc:  # the port is taken: run the worker without its page
            log.error("worker metrics not served on port %s: %s", settings.worker_metrics_port, exc)
    client = await connect_with_retry(settings, sdk_metrics)
    await ensure_search_attributes(client, settings.temporal_namespace)
    await ensure_time_trigger_schedule(client, settings)
    engine = create_engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = build_worker(
        client, settings.temporal_task_queue, create_sessionmaker(engine), settings
    )
    log.info(
        "worker polling task queues %r and %r (orders)",
        settings.temporal_task_queue,
        order_task_queue(settings),
    )
    async with worker:
        await stop.wait()
        log.info("worker shutting down")
    await engine.dispose()
    tracing.flush()  # the process ends with os._exit: no atexit hook sends the last spans


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's Rust threads can outlive the event loop and abort interpreter finalization
    # ("PyGILState_Release ... must be current", temporalio/sdk-python#300). Everything is
    # shut down and flushed by now, so skip finalization.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
