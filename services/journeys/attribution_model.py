"""The attribution model in force: its per-channel windows, from the settings
(``SUTRA_ATTRIBUTION_WINDOWS``) until a shop changes them through the API, and the change
itself: audited with its date, then past credit decided again (``attribution.recompute``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from contracts.attribution import Windows
from contracts.messages import Channel
from db.models import Attribution, AttributionModel
from services.journeys import journey_orders
from services.journeys.attribution import Recomputed, attribute, recompute
from services.platform import audit

_WINDOWS: TypeAdapter[Windows] = TypeAdapter(Windows)
_ROW = 1


@dataclass(frozen=True)
class Model:
    windows: dict[Channel, timedelta]
    changed_at: datetime | None  # None: the settings' windows, never changed
    changed_by: str | None


def _iso(windows: Mapping[Any, timedelta]) -> dict[str, Any]:
    dumped: dict[str, Any] = _WINDOWS.dump_python(windows, mode="json")  # type: ignore[arg-type]
    return dumped


async def current(session: AsyncSession, settings: Settings) -> Model:
    row = await session.get(AttributionModel, _ROW)
    if row is None:
        return Model(dict(settings.attribution_windows), None, None)
    return Model(dict(_WINDOWS.validate_python(row.windows)), row.changed_at, row.changed_by)


async def change(
    session: AsyncSession,
    settings: Settings,
    windows: dict[Channel, timedelta],
    actor: audit.Actor,
    now: datetime,
    start: datetime | None,
    end: datetime | None,
) -> tuple[Model, Recomputed]:
    """Put ``windows`` in force (a channel left out has no window: its messages are no
    longer credited), audit the change with its date, and recompute the credit of orders
    placed in [start, end) (None: no bound) under it, all in the caller's transaction."""
    before = await current(session, settings)
    row = await session.get(AttributionModel, _ROW, with_for_update=True)
    if row is None:
        row = AttributionModel(id=_ROW)
        session.add(row)
    row.windows, row.changed_at, row.changed_by = _iso(windows), now, actor.name
    done = await recompute(session, windows, start, end)
    audit.record(
        session,
        actor,
        "attribution_model",
        "windows",
        "changed",
        {
            "changed_at": now.isoformat(),
            "from": _iso(before.windows),
            "to": _iso(windows),
            "recomputed": {
                "from": start.isoformat() if start else None,
                "to": end.isoformat() if end else None,
                "orders": done.orders,
                "moved": done.moved,
            },
        },
    )
    return Model(dict(windows), now, actor.name), done


async def credit(
    session: AsyncSession,
    settings: Settings,
    *,
    workflow_id: str,
    run_id: str | None,
    order_id: str,
    customer_id: str,
    cart_id: str | None,
) -> Attribution | None:
    """A journey asking credit for an order it reached its goal with: recorded as that
    journey's goal order (held out or not), and credited under the model in force."""
    model = await current(session, settings)
    await journey_orders.record(
        session, workflow_id=workflow_id, run_id=run_id, order_id=order_id, cart_id=cart_id
    )
    return await attribute(
        session, order_id=order_id, customer_id=customer_id, cart_id=cart_id, windows=model.windows
    )
