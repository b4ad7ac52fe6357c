"""A worker in its own process, for tests that kill it: the production wiring from the
environment's settings, plus the test journey. ``python -m tests.worker_process``."""

from __future__ import annotations

import asyncio
import os
import sys

from config.settings import get_settings
from db.engine import create_engine, create_sessionmaker
from services.platform.task_failure_log import worker_runtime
from services.platform.temporal import connect
from tests.messaging_workflow import MessageTestWorkflow
from worker import build_worker


async def main() -> None:
    settings = get_settings()
    client = await connect(settings, runtime=worker_runtime())
    engine = create_engine(settings)
    worker = build_worker(
        client,
        settings.temporal_task_queue,
        create_sessionmaker(engine),
        settings,
        extra_workflows=[MessageTestWorkflow],
    )
    async with worker:
        print("worker ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        sys.stdout.flush()
        os._exit(0)  # see worker.py: skip finalization with the SDK's threads alive
