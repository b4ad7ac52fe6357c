"""The overview's queries run side by side on connections sharing one snapshot: what one
session reads, every other reads too, whatever is committed meanwhile."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.models import Suppression
from services.analytics.snapshot import shared_snapshot, side_by_side
from tests.factories import uid


async def _count(session: AsyncSession, reason: str) -> int:
    found = await session.scalar(
        select(func.count()).select_from(Suppression).where(Suppression.reason == reason)
    )
    return int(found or 0)


async def test_sessions_of_one_snapshot_all_read_the_moment_it_was_taken(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
):
    reason = uid("snapshot")

    async def suppress() -> None:
        async with sessionmaker() as session, session.begin():
            session.add(
                Suppression(
                    channel="email",
                    address=f"{uid('a')}@x.example",
                    scope="marketing",
                    reason=reason,
                    source="tests",
                )
            )

    await suppress()
    async with shared_snapshot(engine, 3) as sessions:
        before = await _count(sessions[0], reason)
        await suppress()  # committed after the snapshot was taken
        seen = await asyncio.gather(*(_count(s, reason) for s in sessions))
        async with sessionmaker() as fresh:
            now = await _count(fresh, reason)

    assert (before, seen, now) == (1, [1, 1, 1], 2)


async def test_groups_run_side_by_side_or_in_turn_and_answer_in_order(engine: AsyncEngine):
    async def backend(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.pg_backend_pid())) or 0)

    async with AsyncSession(engine) as session:
        parallel = await side_by_side(session, backend, backend, backend)
    async with engine.connect() as connection:
        one = AsyncSession(bind=connection)
        in_turn = await side_by_side(one, backend, backend, backend)
        await one.close()

    assert len(set(parallel)) == 3, "each group on a connection of its own"
    assert len(set(in_turn)) == 1, "on a session bound to one connection, all on it"
