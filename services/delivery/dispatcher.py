"""The dispatcher: delivers stored event routes to Temporal, in order per workflow.

Accepted means never lost: the API answers once the event and its routes are committed,
whether or not Temporal is up. This loop then signals (or signal-with-starts) each
workflow. One process at a time leads (a PostgreSQL advisory lock), so per-workflow
order holds with any number of API replicas. A crash between delivery and bookkeeping
re-delivers; workflows ignore event ids they have already seen.

Owns its transactions: it is a loop with no caller to hand it a unit of work, and each
batch is read, delivered to Temporal outside any transaction, then its bookkeeping
committed in one (``dispatch_once`` → ``_record``), so no row lock is held while Temporal
is called. It is constructed with the sessionmaker; leadership is a session-level advisory
lock on a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import delete, func, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from db.engine import connect
from db.models import EventRoute, RouteHold
from services.delivery.ended_workflows import JUDGED, Outcome, deliver_to_ended
from services.delivery.outbox import ROUTES_CHANNEL
from services.platform import metrics
from services.platform.temporal import task_queue_for

log = logging.getLogger(__name__)

LOCK_KEY = 0x5375747261  # "Sutra"
# Errors that mean "Temporal is not answering", as opposed to "this workflow has a problem".
_OUTAGE = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}

_DUE = text(
    """
    SELECT r.seq, r.workflow_id, r.workflow_type, r.kind, r.signal_name, r.signal_payload,
           r.start_input, r.search_attributes, r.summary, r.target_query
    FROM event_routes r
    WHERE r.status = 'pending'
      AND NOT EXISTS (
        SELECT 1 FROM route_holds h WHERE h.workflow_id = r.workflow_id AND h.until > now()
      )
    ORDER BY r.seq
    LIMIT :limit
    """
)


class TemporalUnavailable(Exception):
    pass


@dataclass
class _GroupResult:
    # (seq, "delivered" | "skipped" | "delivered_to_closed", why, for the ended workflow)
    done: list[tuple[int, str, str | None]]
    failed_seq: int | None = None
    error: str | None = None
    outage: bool = False


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: Client,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.client = client
        self.is_leader = False
        self._semaphore = asyncio.Semaphore(settings.dispatcher_concurrency)

    async def run(self) -> None:
        """Run until cancelled: wait for leadership, then deliver."""
        standby = self.settings.dispatcher_poll_interval.total_seconds() * 5
        while True:
            try:
                # The database's deadlines apply here too: a LISTEN connection to a server
                # that hangs fails its next round trip instead of waiting on it forever (a
                # notifies() wait has a timeout of its own, the poll interval, and polls).
                async with await connect(self.settings, autocommit=True) as conn:
                    row = await (
                        await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                    ).fetchone()
                    if not (row and row[0]):
                        await asyncio.sleep(standby)
                        continue
                    await conn.execute(f"LISTEN {ROUTES_CHANNEL}")
                    self._set_leader(True)
                    log.info("dispatcher leading")
                    await self._lead(conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher lost its database connection; retrying")
                await asyncio.sleep(standby)
            finally:
                self._set_leader(False)

    def _set_leader(self, leader: bool) -> None:
        self.is_leader = leader
        metrics.DISPATCHER_LEADER.set(1 if leader else 0)

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        poll = self.settings.dispatcher_poll_interval.total_seconds()
        max_backoff = self.settings.dispatcher_max_backoff.total_seconds()
        backoff = 0.0
        while True:
            try:
                _count, more = await self.dispatch_once()
            except TemporalUnavailable as exc:
                metrics.TEMPORAL_UP.set(0)
                backoff = min(max_backoff, backoff * 2 if backoff else poll / 2 or 0.1)
                log.warning("Temporal unavailable (%s); retrying in %.1fs", exc, backoff)
                # No listening while backing off: new events must not hammer a down server.
                await asyncio.sleep(backoff)
                continue
            metrics.TEMPORAL_UP.set(1)
            backoff = 0.0
            if more:
                continue
            async for _ in conn.notifies(timeout=poll, stop_after=1):
                break

    async def dispatch_once(self) -> tuple[int, bool]:
        """Deliver one batch of due routes. Returns (routes handled, maybe more waiting)."""
        limit = self.settings.dispatcher_batch_size
        async with self.sessionmaker() as session:
            rows = (await session.execute(_DUE, {"limit": limit})).mappings().all()
            await self._update_lag(session)
        if not rows:
            return 0, False
        groups: dict[str, list[Any]] = {}
        for row in rows:
            groups.setdefault(row["workflow_id"], []).append(row)
        results = await asyncio.gather(*(self._deliver_group(g) for g in groups.values()))
        async with self.sessionmaker() as session, session.begin():
            await self._record(session, list(groups), results)
        outages = [r for r in results if r.outage]
        if outages:
            raise TemporalUnavailable(outages[0].error)
        handled = sum(len(r.done) for r in results)
        return handled, len(rows) == limit

    async def _update_lag(self, session: AsyncSession) -> None:
        oldest = (
            await session.execute(
                text(
                    "SELECT created_at FROM event_routes WHERE status = 'pending' "
                    "ORDER BY seq LIMIT 1"
                )
            )
        ).scalar()
        lag = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        metrics.ROUTE_LAG.set(max(lag, 0.0))

    async def _deliver_group(self, routes: Sequence[Any]) -> _GroupResult:
        result = _GroupResult(done=[])
        for route in routes:
            try:
                async with self._semaphore:
                    outcome = await self._deliver(route)
            except RPCError as exc:
                result.failed_seq, result.error = route["seq"], f"{exc.status.name}: {exc.message}"
                result.outage = exc.status in _OUTAGE
                break
            except Exception as exc:  # connection refused and the like surface as RuntimeError
                result.failed_seq, result.error = route["seq"], f"{type(exc).__name__}: {exc}"
                result.outage = True
                break
            result.done.append((route["seq"], outcome.status, outcome.detail))
            metrics.ROUTES.labels(route["workflow_type"], outcome.status).inc()
        if result.failed_seq is not None:
            metrics.ROUTES.labels(routes[0]["workflow_type"], "retry").inc()
        return result

    async def _deliver(self, route: Any) -> Outcome:
        timeout = self.settings.dispatcher_rpc_timeout
        if route["kind"] == "signal_query":
            return Outcome(await self._signal_query(route))
        if route["kind"] == "signal":
            handle = self.client.get_workflow_handle(route["workflow_id"])
            try:
                await handle.signal(
                    route["signal_name"], route["signal_payload"], rpc_timeout=timeout
                )
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                if route["workflow_type"] in JUDGED:
                    return await self._to_ended(route)
                return Outcome("skipped")  # nothing running to tell: that is the answer
            return Outcome("delivered")
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in (route["search_attributes"] or {}).items()
        ]
        if route["kind"] == "start":
            # A journey an event starts: one already running under that id is the same
            # journey (a re-delivery, or the customer already in it), not an error.
            try:
                await self.client.start_workflow(
                    route["workflow_type"],
                    route["start_input"],
                    id=route["workflow_id"],
                    task_queue=task_queue_for(self.settings, route["workflow_type"]),
                    search_attributes=TypedSearchAttributes(pairs),
                    static_summary=route["summary"],
                    rpc_timeout=timeout,
                )
            except WorkflowAlreadyStartedError:
                return Outcome("skipped")
            return Outcome("delivered")
        # Over an ended run nothing starts afresh: the ended workflow is told instead.
        try:
            await self.client.start_workflow(
                route["workflow_type"],
                route["start_input"],
                id=route["workflow_id"],
                task_queue=task_queue_for(self.settings, route["workflow_type"]),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                start_signal=route["signal_name"],
                start_signal_args=[route["signal_payload"]],
                search_attributes=TypedSearchAttributes(pairs),
                static_summary=route["summary"],
                rpc_timeout=timeout,
            )
        except WorkflowAlreadyStartedError:
            return await self._to_ended(route)
        return Outcome("delivered")

    async def _to_ended(self, route: Any) -> Outcome:
        return await deliver_to_ended(
            self.client,
            route,
            task_queue_for(self.settings, route["workflow_type"]),
            self.settings.dispatcher_rpc_timeout,
        )

    async def _signal_query(self, route: Any) -> str:
        """Every running workflow the route's visibility query finds (a customer's
        journeys, a rule's journeys)."""
        query = f'({route["target_query"]}) AND ExecutionStatus = "Running"'
        timeout = self.settings.dispatcher_rpc_timeout
        reached = 0
        async for execution in self.client.list_workflows(query, rpc_timeout=timeout):
            handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                await handle.signal(
                    route["signal_name"], route["signal_payload"], rpc_timeout=timeout
                )
                reached += 1
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:  # it ended meanwhile: fine
                    raise
        return "delivered" if reached else "skipped"

    async def _record(
        self, session: AsyncSession, workflow_ids: list[str], results: Sequence[_GroupResult]
    ) -> None:
        now = datetime.now(UTC)
        for status in ("delivered", "skipped"):
            seqs = [
                seq for r in results for seq, got, why in r.done if (got, why) == (status, None)
            ]
            if seqs:
                await session.execute(
                    update(EventRoute)
                    .where(EventRoute.seq.in_(seqs))
                    .values(status=status, delivered_at=now, attempts=EventRoute.attempts + 1)
                )
        for seq, got, detail in (d for r in results for d in r.done if d[2] is not None):
            await session.execute(
                update(EventRoute)
                .where(EventRoute.seq == seq)
                .values(
                    status=got, detail=detail, delivered_at=now, attempts=EventRoute.attempts + 1
                )
            )
        cleared = [wid for wid, r in zip(workflow_ids, results, strict=True) if r.done]
        if cleared:
            await session.execute(delete(RouteHold).where(RouteHold.workflow_id.in_(cleared)))
        for workflow_id, result in zip(workflow_ids, results, strict=True):
            if result.failed_seq is None:
                continue
            await session.execute(
                update(EventRoute)
                .where(EventRoute.seq == result.failed_seq)
                .values(attempts=EventRoute.attempts + 1, last_error=result.error)
            )
            if result.outage:
                continue
            # This workflow's own problem: hold its later events back, let others flow.
            log.error("delivery to %s failed: %s", workflow_id, result.error)
            cap = self.settings.dispatcher_max_backoff.total_seconds()
            backoff = func.least(func.power(2, RouteHold.failures), cap)
            stmt = insert(RouteHold).values(
                workflow_id=workflow_id,
                until=now + timedelta(seconds=1),
                failures=1,
                last_error=result.error,
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[RouteHold.workflow_id],
                    set_={
                        "failures": RouteHold.failures + 1,
                        "last_error": result.error,
                        "until": func.now() + func.make_interval(0, 0, 0, 0, 0, 0, backoff),
                    },
                )
            )


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> Any:
    task = asyncio.create_task(dispatcher.run(), name="sutra-dispatcher")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
