"""A customer's workflows as Temporal's visibility lists them (``CustomerId``), one page at
a time: carts, orders and lifecycle journeys, running and closed."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from contracts import search_attributes as sa
from contracts.errors import ServiceUnavailable, Unprocessable


@dataclass(frozen=True)
class Page:
    executions: list[WorkflowExecution]
    next_cursor: str | None


def _not_ours() -> Unprocessable:
    return Unprocessable(
        "cursor: not a cursor this API gave out",
        fields=[{"loc": ["query", "cursor"], "msg": "not a cursor this API gave out"}],
    )


# A cursor is Temporal's page token behind a digest of it: Temporal answers a token it
# cannot read with an internal error (and retries), so a mistyped cursor is caught here.
_DIGEST = 8


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()[:_DIGEST]


def _cursor(token: bytes) -> str:
    return base64.urlsafe_b64encode(_digest(token) + token).decode()


def _token(cursor: str) -> bytes:
    try:
        raw = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _not_ours() from exc
    digest, token = raw[:_DIGEST], raw[_DIGEST:]
    if not token or digest != _digest(token):
        raise _not_ours()
    return token


async def customer_workflows(
    temporal: Client, customer_id: str, *, limit: int, cursor: str | None
) -> Page:
    """One page of the customer's workflows, and the cursor of the next (None: last)."""
    listing = temporal.list_workflows(
        sa.equals(sa.CUSTOMER_ID, customer_id),
        page_size=limit,
        next_page_token=_token(cursor) if cursor else None,
    )
    try:
        await listing.fetch_next_page()
    except RPCError as exc:
        if cursor and exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise _not_ours() from exc
        raise ServiceUnavailable(f"Temporal did not list the journeys: {exc.message}") from exc
    token = listing.next_page_token
    return Page(
        executions=list(listing.current_page or []),
        next_cursor=_cursor(token) if token else None,
    )
