"""Read-only sessions that see one and the same moment of the database, to run a page's
independent queries side by side: the first exports its snapshot (``pg_export_snapshot``),
the others import it (``SET TRANSACTION SNAPSHOT``), so figures read in parallel add up
exactly as if read in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

_ISOLATION = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


@contextlib.asynccontextmanager
async def shared_snapshot(engine: AsyncEngine, count: int) -> AsyncIterator[list[AsyncSession]]:
    """``count`` sessions of their own connections, all reading one snapshot; each must be
    used by one task at a time. Ended (rolled back) on leaving."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(AsyncSession(engine))
        await first.execute(_ISOLATION)
        snapshot = str((await first.execute(text("SELECT pg_export_snapshot()"))).scalar_one())
        # SET TRANSACTION SNAPSHOT takes no bind parameter: the id is checked before it is
        # spelled into the statement.
        if not _SNAPSHOT_ID.match(snapshot):
            raise ValueError(f"unexpected snapshot id {snapshot!r}")
        sessions = [first]
        for _ in range(count - 1):
            session = await stack.enter_async_context(AsyncSession(engine))
            await session.execute(_ISOLATION)
            await session.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
            sessions.append(session)
        yield sessions


async def side_by_side(
    session: AsyncSession, *groups: Callable[[AsyncSession], Awaitable[Any]]
) -> list[Any]:
    """Each group of queries on a connection of its own, all at once, all reading one
    snapshot; their answers in order. On a session bound to one connection rather than an
    engine, one group after the other on it."""
    engine = session.bind
    if not isinstance(engine, AsyncEngine):
        return [await group(session) for group in groups]
    async with shared_snapshot(engine, len(groups)) as sessions:
        return list(
            await asyncio.gather(*(group(s) for group, s in zip(groups, sessions, strict=True)))
        )
