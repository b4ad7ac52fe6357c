"""Marketers' stored versions of templates (``TemplateOverride``, the ``templates`` table):
every query on them is here. Each takes the caller's session and never commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import TemplateOverride
from services.templating.catalogue import locale_chain
from services.templating.renderer import Override


async def names(session: AsyncSession) -> set[str]:
    """Every template name that has a stored version."""
    return set(await session.scalars(select(TemplateOverride.name).distinct()))


async def of_template(session: AsyncSession, name: str) -> list[TemplateOverride]:
    """A template's stored versions, by channel, then locale."""
    return list(
        await session.scalars(
            select(TemplateOverride)
            .where(TemplateOverride.name == name)
            .order_by(TemplateOverride.channel, TemplateOverride.locale)
        )
    )


async def any_of(session: AsyncSession, name: str) -> TemplateOverride | None:
    """One stored version of the template, whichever: its kind and context are the same
    on every one."""
    return await session.scalar(
        select(TemplateOverride).where(TemplateOverride.name == name).limit(1)
    )


async def for_render(
    session: AsyncSession, name: str, channel: str, locale: str | None
) -> dict[str, Override]:
    """What ``Renderer.render(name, channel, locale, ..., overrides=)`` takes: the stored
    versions for ``channel`` in ``locale`` and its fallbacks (``locale_chain``), by locale.
    Pass the same ``locale`` as to ``render``."""
    return {
        row.locale: row.content
        for row in await session.scalars(
            select(TemplateOverride).where(
                TemplateOverride.name == name,
                TemplateOverride.channel == channel,
                TemplateOverride.locale.in_(locale_chain(locale)),
            )
        )
    }


async def store(
    session: AsyncSession,
    name: str,
    kind: str,
    context: Iterable[str],
    contents: Iterable[tuple[str, str, dict[str, Any]]],
    updated_by: uuid.UUID | None,
) -> None:
    """Store ``(channel, locale, content)`` versions of a template: a new one at version 1,
    a replaced one a version up. A stored row is locked first: two saves at once count two
    versions, not one."""
    context_names = list(context)
    for channel, locale, content in contents:
        row = await session.get(TemplateOverride, (name, channel, locale), with_for_update=True)
        if row is None:
            session.add(
                TemplateOverride(
                    name=name,
                    channel=channel,
                    locale=locale,
                    content=content,
                    kind=kind,
                    context=list(context_names),
                    version=1,
                    updated_by=updated_by,
                )
            )
        else:
            row.content, row.kind, row.context = content, kind, list(context_names)
            row.version += 1
            row.updated_by = updated_by


async def delete_all(session: AsyncSession, name: str) -> int:
    """Drop a template's stored versions; how many there were."""
    result = await session.execute(delete(TemplateOverride).where(TemplateOverride.name == name))
    return int(result.rowcount)  # type: ignore[attr-defined]
