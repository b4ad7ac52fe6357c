"""A shop on the time-skipping server: events go in exactly as the API and the dispatcher
would put them (stored, routed, delivered), and every workflow they reached is ended at
teardown so nothing keeps the shared server from skipping time."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts.events import EVENT_ADAPTER
from services.dispatcher import Dispatcher
from services.intake import ingest
from services.routing import routes_for


class SkippingShop:
    def __init__(
        self,
        env: WorkflowEnvironment,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        self.env = env
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.dispatcher = Dispatcher(settings, sessionmaker, env.client)
        self.workflows: list[str] = []

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def send(self, event: dict[str, Any]) -> str:
        """Take the event like ``POST /v1/events``; ``accepted`` or ``duplicate``."""
        parsed = EVENT_ADAPTER.validate_python(event)
        async with self.sessionmaker() as session, session.begin():
            [status] = await ingest(session, [parsed], settings=self.settings, api_key_id=None)
        await self.deliver(parsed)
        return status

    async def deliver(self, parsed: Any) -> None:
        for route in routes_for(parsed, self.settings):
            if route.kind == "signal_query":
                continue  # visibility queries are the dev server's business
            await self.dispatcher._deliver(route.__dict__)
            if route.workflow_id not in self.workflows:
                self.workflows.append(route.workflow_id)

    async def terminate_all(self) -> None:
        for workflow_id in self.workflows:
            with contextlib.suppress(RPCError):  # already ended
                await self.env.client.get_workflow_handle(workflow_id).terminate()
