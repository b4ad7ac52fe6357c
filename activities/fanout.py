"""The product fan-out's one activity: start the journeys of one audience page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from activities.heartbeats import heartbeating
from config.settings import Settings
from contracts.fanout import FANOUT_BATCH, FanoutBatch, FanoutInput
from services.journeys import fanout

# A pause the workflow takes on a timer costs about a second of timer and task round trips
# on top of itself: with small pages that, not the configured rate, set the pace (a page a
# second). A pause up to this long is kept here instead, counted from the page's start and
# heartbeating, well inside the page's two-minute timeout; a longer one is the workflow's.
_PAUSE_HERE = timedelta(seconds=30)


class FanoutActivities:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
    ) -> None:
        self._client = client
        # The journeys run on the queue this worker polls (not necessarily the settings').
        self._task_queue = task_queue
        self._sessionmaker = sessionmaker
        self._settings = settings

    @activity.defn(name=FANOUT_BATCH)
    async def fanout_batch(self, input: FanoutInput) -> FanoutBatch:
        began = time.monotonic()
        async with heartbeating():
            page = await fanout.run_page(
                self._client,
                self._sessionmaker,
                self._task_queue,
                input,
                limit=self._settings.fanout_batch_size,
                now=datetime.now(UTC),
            )
            pause = timedelta(seconds=page.journeys / self._settings.fanout_rate_per_second)
            if page.cursor is not None and pause <= _PAUSE_HERE:
                await asyncio.sleep(max(0.0, pause.total_seconds() - (time.monotonic() - began)))
                pause = timedelta(0)
        return FanoutBatch(cursor=page.cursor, customers=page.customers, pause=pause)

    def all(self) -> list[Callable[..., Any]]:
        return [self.fanout_batch]
