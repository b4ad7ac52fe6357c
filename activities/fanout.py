"""The product fan-out's one activity: start the journeys of one audience page."""

from __future__ import annotations

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
        async with heartbeating():
            page = await fanout.run_page(
                self._client,
                self._sessionmaker,
                self._task_queue,
                input,
                limit=self._settings.fanout_batch_size,
                now=datetime.now(UTC),
            )
        return FanoutBatch(
            cursor=page.cursor,
            customers=page.customers,
            pause=timedelta(seconds=page.journeys / self._settings.fanout_rate_per_second),
        )

    def all(self) -> list[Callable[..., Any]]:
        return [self.fanout_batch]
