"""Heartbeats for the long batch activities (a fan-out page, a sweep batch).

Temporal learns that a worker died mid-activity only when the attempt times out. Without a
heartbeat timeout that is the attempt's start-to-close timeout — minutes for a batch that
starts hundreds of journeys — and the fan-out or sweep stands still that long after a
crash. With one, a silent attempt is given up after the heartbeat timeout and retried on a
live worker. The beat comes from a task beside the batch, not from its progress: it says
"this worker is alive", and the batch's own timeout still caps an attempt that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

# Beats per heartbeat timeout: one late beat on a busy worker must not lose the attempt.
_BEATS_PER_TIMEOUT = 4


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the body runs, if the activity was scheduled with a heartbeat
    timeout (older workflow runs schedule theirs without one)."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    interval = timeout.total_seconds() / _BEATS_PER_TIMEOUT

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
