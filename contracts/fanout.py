"""Contracts of the product fan-out (workflows/product_fanout.py, ``fanout/{event_id}``) and
its one activity, which starts the journeys of one audience page."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

FANOUT_BATCH = "fanout_batch"


class FanoutInput(BaseModel):
    """A product event (back in stock, price dropped) to announce to every interested
    customer: subscribers, or customers who viewed or carted it. Workflow
    ``fanout/{event_id}``; it pages through the audience in batches under a rate."""

    event_id: str
    trigger: Literal["product.back_in_stock", "product.price_dropped"]
    sku: str
    occurred_at: datetime
    # Template variables: {"product": {"sku", "name", "url", "old_price", "new_price", ...}}.
    context: dict[str, Any] = Field(default_factory=dict)
    # Carried across continue-as-new: where the audience scan is.
    cursor: str | None = None
    notified: int = 0


class FanoutBatch(BaseModel):
    # Where the next page starts; None: the audience is exhausted.
    cursor: str | None
    customers: int
    # How long to wait before the next page to keep to the configured rate. Decided by the
    # activity, from the worker's settings, and recorded in history: the workflow stays
    # deterministic.
    pause: timedelta
