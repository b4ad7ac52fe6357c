"""A shop on the time-skipping server: events go in exactly as the API and the dispatcher
would put them (stored, routed, delivered), and every workflow they reached is ended at
teardown.

Do not send an event at the instant one of the shop's timers is due (an order's 24 h
shipping SLA one day after it was placed, say). Between skips the server's clock runs at
real pace, so the timer fires while the workflow task that handles the event is with the
worker; that task cancels the timer, and the time-skipping server refuses the completion
("invalid history builder state for action", temporalio/sdk-java#3088) and never retries
it: the workflow is stranded and the clock stops. A real Temporal server accepts it."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts.events import EVENT_ADAPTER
from db.models import EventRoute
from services.delivery.dispatcher import Dispatcher
from services.intake.service import ingest

KARACHI = ZoneInfo("Asia/Karachi")


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

    async def at_local(self, hour: int) -> datetime:
        """Skip to the next ``hour`` o'clock in Karachi, where the test customers live:
        sends then fall outside quiet hours."""
        local = (await self.now()).astimezone(KARACHI)
        target = local.replace(hour=hour, minute=0, second=0, microsecond=0)
        if target <= local:
            target += timedelta(days=1)
        await self.env.sleep(target - local)
        return await self.now()

    async def send(self, event: dict[str, Any]) -> str:
        """Take the event like ``POST /v1/events``; ``accepted`` or ``duplicate``."""
        parsed = EVENT_ADAPTER.validate_python(event)
        # Accepted on the server's clock, as the API does on its own.
        received_at = await self.now()
        async with self.sessionmaker() as session, session.begin():
            [status] = await ingest(
                session, [parsed], settings=self.settings, api_key_id=None, received_at=received_at
            )
        await self.deliver(parsed)
        return status

    async def deliver(self, parsed: Any) -> None:
        """Deliver the routes intake stored for the event, in order, as the dispatcher
        would (and mark them delivered, so a dispatcher would not deliver them again)."""
        async with self.sessionmaker() as session, session.begin():
            rows = (
                await session.scalars(
                    select(EventRoute)
                    .where(EventRoute.event_id == parsed.id, EventRoute.status == "pending")
                    .order_by(EventRoute.seq)
                    .with_for_update()
                )
            ).all()
            for row in rows:
                row.status = "delivered"
                if row.kind == "signal_query":
                    continue  # visibility queries are the dev server's business
                route = {c.name: getattr(row, c.name) for c in EventRoute.__table__.columns}
                outcome = await self.dispatcher._deliver(route)
                row.status, row.detail = outcome.status, outcome.detail
                if row.workflow_id not in self.workflows:
                    self.workflows.append(row.workflow_id)

    async def terminate_all(self) -> None:
        for workflow_id in self.workflows:
            with contextlib.suppress(RPCError):  # already ended
                await self.env.client.get_workflow_handle(workflow_id).terminate()
