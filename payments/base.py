"""What the order workflow needs from a payment provider, and nothing more.

Every call is idempotent on a key Sutra derives from the order, so an activity retried after
a crash finds what the first attempt made instead of making it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

LinkStatus = Literal["created", "paid", "cancelled", "expired"]


class PaymentError(Exception):
    """A provider refused. ``permanent``: retrying the same call cannot succeed."""

    def __init__(self, message: str, *, permanent: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True)
class LinkRequest:
    reference: str  # unique per order and purpose; the provider's reference id
    order_id: str
    purpose: str
    amount: Decimal
    currency: str
    description: str
    expire_at: datetime
    customer_name: str | None = None
    customer_email: str | None = None
    customer_phone: str | None = None


@dataclass(frozen=True)
class Link:
    provider: str
    link_id: str
    url: str
    status: LinkStatus = "created"
    payment_id: str | None = None


@dataclass(frozen=True)
class RefundRequest:
    key: str  # idempotency: one refund per key, ever
    payment_id: str
    amount: Decimal
    currency: str
    reason: str
    order_id: str


class PaymentProvider(Protocol):
    name: str

    def create_link(self, request: LinkRequest, *, retrying: bool) -> Link:
        """``retrying``: an earlier attempt may have reached the provider; find it first."""
        ...

    def cancel_link(self, link_id: str) -> Link:
        """Cancel an unpaid link; a link already paid comes back as ``paid``."""
        ...

    def refund(self, request: RefundRequest, *, retrying: bool) -> str:
        """The provider's refund id."""
        ...
