"""The API as production runs it (uvicorn in its own process), for tests that must talk
to the engine only from outside, over HTTP: the clock and timestamp tests of issue 11,
whose defect was found that way."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY
from tests.factories import customer, item, uid
from tests.processes import ApiProcess, processes, sutra_env

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@contextlib.contextmanager
def outside_engine(database_url: str, temporal_address: str, **env: str) -> Iterator[ApiProcess]:
    """The API process with the admin key and ``env``. No dispatcher: what these tests
    look at is what intake accepts, not where it goes."""
    folder = Path(tempfile.mkdtemp(prefix="sutra-outside-"))
    with processes() as started:
        api = started.add(ApiProcess(folder, {}))
        api.env = sutra_env(
            database_url,
            temporal_address,
            f"tq-{uid('outside')}",
            SUTRA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            SUTRA_DISPATCHER_ENABLED="false",
            SUTRA_RATE_LIMIT_PER_MINUTE="0",
            **env,
        )
        api.start()
        yield api


class Http(httpx.Client):
    """A client that reports a dropped connection as an answer (599), not an exception:
    the old code's crash closed the connection, and a test should say what it sent."""

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        try:
            return super().request(*args, **kwargs)
        except httpx.TransportError as exc:
            return httpx.Response(599, json={"error": "connection_dropped", "detail": repr(exc)})


def event(kind: str, occurred_at: Any) -> dict[str, Any]:
    """A valid event of ``kind`` but for its ``occurred_at``."""
    order = {"order_id": uid("ord")}
    cart = {"cart_id": uid("cart"), "currency": "PKR", "items": [item()]}
    by_kind: dict[str, dict[str, Any]] = {
        "cart.updated": cart,
        "checkout.started": cart,
        "order.placed": {
            **order,
            "items": [item()],
            "total": "4500.00",
            "currency": "PKR",
            "payment_type": "cod",
        },
        "payment.captured": {**order, "amount": "450.00", "currency": "PKR"},
        "payment.failed": {**order, "amount": "450.00", "currency": "PKR"},
        "payment.refunded": {**order, "amount": "450.00", "currency": "PKR", "refund_id": "rf1"},
        "product.back_in_stock": {"sku": "SKU1"},
        "product.price_dropped": {
            "sku": "SKU1",
            "currency": "PKR",
            "old_price": "5000.00",
            "new_price": "4500.00",
        },
        "back_in_stock.subscribed": {"sku": "SKU1"},
    }
    data = by_kind.get(kind, order if kind.startswith("order.") else {})
    body: dict[str, Any] = {"id": uid("evt"), "type": kind, "occurred_at": occurred_at}
    if not kind.startswith("product."):
        body["customer"] = customer(uid("c"))
    return {**body, "data": data}
