"""A time-trigger sweep worker in its own process, for tests that SIGKILL it mid-batch:
the sweep workflow and its activities, wired as ``worker.build_worker`` wires them, but
starting the journeys on a queue of their own (``<queue>-journeys``) that no worker polls.
Thousands of journeys then wait there instead of all running on a 2-core machine; what is
under test is that each is started once. ``python -m tests.sweep_worker_process``."""

from __future__ import annotations

import asyncio
import os
import sys

from temporalio.worker import Worker

from activities.experiments import ExperimentActivities
from activities.sweeps import SweepActivities
from config.settings import get_settings
from db.engine import create_engine, create_sessionmaker
from services.platform.temporal import connect
from worker import HEARTBEAT_THROTTLE
from workflows.time_trigger_sweep import TimeTriggerSweep


def journeys_queue(task_queue: str) -> str:
    return f"{task_queue}-journeys"


async def main() -> None:
    settings = get_settings()
    client = await connect(settings)
    sessionmaker = create_sessionmaker(create_engine(settings))
    queue = settings.temporal_task_queue
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[TimeTriggerSweep],
        activities=[
            *SweepActivities(client, sessionmaker, journeys_queue(queue)).all(),
            *ExperimentActivities(sessionmaker).all(),
        ],
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
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
