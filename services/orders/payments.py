"""The payment ledger: links and refunds are recorded before the provider is called, so a
retried activity finds what an earlier attempt made and never makes a second one."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import Settings
from contracts.errors import NotFound
from contracts.events import EVENT_ADAPTER
from contracts.orders import CancelLinkResult, CreateLinkInput, PaymentLinkInfo, RefundInput
from db.models import PaymentLink, Refund
from payments import provider_for, provider_named
from payments.base import Link, LinkRequest, PaymentError, PaymentProvider, RefundRequest
from services.intake.service import ingest
from services.platform import metrics

_REFERENCE_MAX = 40  # Razorpay's limit on reference_id


def link_reference(order_id: str, purpose: str) -> str:
    plain = f"{order_id}-{purpose}"
    if len(plain) <= _REFERENCE_MAX and plain.isascii():
        return plain
    return f"sutra-{hashlib.sha256(order_id.encode()).hexdigest()[:24]}-{purpose}"


def _info(row: PaymentLink) -> PaymentLinkInfo:
    return PaymentLinkInfo(
        purpose=row.purpose,
        reference=row.reference,
        provider=row.provider,
        link_id=row.link_id or "",
        url=row.url or "",
        amount=row.amount,
        expire_at=row.expire_at,
        status=row.status,
    )


@dataclass(frozen=True)
class _Reserved:
    """A link's row is committed and still ``creating``: what the provider call needs."""

    provider: PaymentProvider
    retrying: bool
    amount: Decimal
    currency: str
    expire_at: datetime


def payment_error_kind(exc: BaseException) -> str:
    """How a payment provider's failure counts in ``sutra_provider_errors_total``."""
    if isinstance(exc, PaymentError):
        return "permanent" if exc.permanent else "transient"
    return "unexpected"


class PaymentLedger:
    """Payment links and refunds of orders, recorded around their provider calls.

    Owns its transactions: a link's or refund's row is committed before the provider is
    called, so a retried activity finds what an earlier attempt made (and tells the
    provider it is retrying), and the provider's answer is committed after the call; no
    transaction is held open across a provider call. Each commit is one named step:
    ``_reserve_link``, ``_record_link``, ``_record_cancel``, ``_reserve_refund``,
    ``_record_refund``, ``refund_failed``.
    """

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        providers: dict[str, PaymentProvider] | None = None,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._providers = providers or {}

    def _provider(self, name: str) -> PaymentProvider:
        if name not in self._providers:
            self._providers[name] = provider_named(self._settings, name)
        return self._providers[name]

    async def create_link(
        self, input: CreateLinkInput, customer: dict[str, Any]
    ) -> PaymentLinkInfo:
        reference = link_reference(input.order_id, input.purpose)
        reserved = await self._reserve_link(input, reference)
        if isinstance(reserved, PaymentLinkInfo):
            return reserved
        request = LinkRequest(
            reference=reference,
            order_id=input.order_id,
            purpose=input.purpose,
            amount=reserved.amount.quantize(input.amount),
            currency=reserved.currency,
            description=_description(self._settings, input),
            expire_at=reserved.expire_at,
            customer_name=customer.get("name"),
            customer_email=customer.get("email"),
            customer_phone=customer.get("phone"),
        )
        with metrics.provider_call(reserved.provider.name, "create_link", payment_error_kind):
            link = await asyncio.to_thread(
                reserved.provider.create_link, request, retrying=reserved.retrying
            )
        return await self._record_link(reference, link)

    async def _reserve_link(
        self, input: CreateLinkInput, reference: str
    ) -> _Reserved | PaymentLinkInfo:
        """The link's row, made or found (and its attempt counted); the link itself if an
        earlier attempt got it from the provider."""
        provider_name = provider_for(self._settings, input.currency).name
        async with self._sessionmaker() as session, session.begin():
            row = (
                await session.execute(
                    insert(PaymentLink)
                    .values(
                        reference=reference,
                        order_id=input.order_id,
                        purpose=input.purpose,
                        provider=provider_name,
                        amount=input.amount,
                        currency=input.currency,
                        expire_at=input.expire_at,
                        attempts=1,
                    )
                    .on_conflict_do_update(
                        index_elements=[PaymentLink.reference],
                        set_={"attempts": PaymentLink.attempts + 1},
                    )
                    .returning(PaymentLink)
                )
            ).scalar_one()
            if row.status != "creating":
                return _info(row)
            # The provider chosen first stays chosen, even if settings changed since.
            return _Reserved(
                provider=self._provider(row.provider),
                retrying=row.attempts > 1,
                amount=row.amount,
                currency=row.currency,
                expire_at=row.expire_at,
            )

    async def _record_link(self, reference: str, link: Link) -> PaymentLinkInfo:
        async with self._sessionmaker() as session, session.begin():
            row = (
                await session.execute(
                    update(PaymentLink)
                    .where(PaymentLink.reference == reference)
                    .values(
                        link_id=link.link_id,
                        url=link.url,
                        status=link.status,
                        payment_id=link.payment_id,
                    )
                    .returning(PaymentLink)
                )
            ).scalar_one()
            return _info(row)

    async def cancel_link(self, reference: str, now: datetime) -> CancelLinkResult:
        async with self._sessionmaker() as session:
            row = await session.get(PaymentLink, reference)
        if row is None or row.link_id is None:
            return CancelLinkResult(status="cancelled")  # never reached the provider
        if row.status in ("paid", "cancelled", "expired"):
            return CancelLinkResult(status=row.status, payment_id=row.payment_id)
        provider = self._provider(row.provider)
        with metrics.provider_call(provider.name, "cancel_link", payment_error_kind):
            link = await asyncio.to_thread(provider.cancel_link, row.link_id)
        return await self._record_cancel(reference, link, now)

    async def _record_cancel(self, reference: str, link: Link, now: datetime) -> CancelLinkResult:
        async with self._sessionmaker() as session, session.begin():
            current = await session.get(PaymentLink, reference, with_for_update=True)
            assert current is not None
            if current.status != "paid":  # a webhook may have said paid meanwhile
                current.status = link.status
                current.payment_id = current.payment_id or link.payment_id
                if link.status == "cancelled":
                    current.cancelled_at = now
            return CancelLinkResult(status=current.status, payment_id=current.payment_id)

    async def refund(self, input: RefundInput) -> str:
        reserved = await self._reserve_refund(input)
        if isinstance(reserved, str):
            return reserved
        request = RefundRequest(
            key=input.key,
            payment_id=input.payment_id,
            amount=input.amount,
            currency=input.currency,
            reason=input.reason,
            order_id=input.order_id,
        )
        provider = self._provider(input.provider)
        with metrics.provider_call(provider.name, "refund", payment_error_kind):
            refund_id = await asyncio.to_thread(provider.refund, request, retrying=reserved)
        await self._record_refund(input.key, refund_id)
        return refund_id

    async def _reserve_refund(self, input: RefundInput) -> str | bool:
        """The refund's row, made or found (and its attempt counted): the provider's refund
        id if an earlier attempt got one, else whether this attempt is a retry."""
        async with self._sessionmaker() as session, session.begin():
            row = (
                await session.execute(
                    insert(Refund)
                    .values(
                        key=input.key,
                        order_id=input.order_id,
                        provider=input.provider,
                        payment_id=input.payment_id,
                        amount=input.amount,
                        currency=input.currency,
                        reason=input.reason,
                        attempts=1,
                    )
                    .on_conflict_do_update(
                        index_elements=[Refund.key], set_={"attempts": Refund.attempts + 1}
                    )
                    .returning(Refund)
                )
            ).scalar_one()
            if row.status == "done" and row.provider_refund_id:
                return row.provider_refund_id
            return row.attempts > 1

    async def _record_refund(self, key: str, refund_id: str) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(Refund)
                .where(Refund.key == key)
                .values(status="done", provider_refund_id=refund_id, done_at=func.now())
            )

    async def refund_failed(self, key: str, error: str) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(Refund).where(Refund.key == key).values(status="failed", error=error[:2000])
            )


def _description(settings: Settings, input: CreateLinkInput) -> str:
    what = {
        "upfront": "Upfront payment",
        "prepaid": "Payment",
        "offer": "Pay now and save",
    }[input.purpose]
    return f"{settings.shop_name}: {what} for order {input.order_id}"


async def sandbox_link(session: AsyncSession, settings: Settings, reference: str) -> PaymentLink:
    """The sandbox's payment link for the sandbox pay page; ``NotFound`` for any other."""
    link = await session.get(PaymentLink, reference)
    # Only sandbox links, and never in production: this page must not pay a real order.
    if link is None or not link.provider.startswith("sandbox:") or settings.is_production:
        raise NotFound(f"no sandbox payment link {reference!r}")
    return link


async def mark_paid(
    session: AsyncSession, reference: str, payment_id: str | None, now: datetime
) -> PaymentLink | None:
    """A provider said a link was paid; returns the link (None if it is not ours)."""
    row = await session.get(PaymentLink, reference, with_for_update=True)
    if row is None:
        return None
    if row.status != "paid":
        row.status, row.paid_at = "paid", now
    row.payment_id = payment_id or row.payment_id
    return row


async def record_capture(
    session: AsyncSession,
    settings: Settings,
    *,
    event_id: str,
    reference: str,
    payment_id: str | None,
    amount: Decimal,
    currency: str,
    provider: str,
    at: datetime,
) -> str:
    """A provider said one of our links was paid: mark it, and take a ``payment.captured``
    event (the provider's event id as its id) for the order's workflow. ``accepted``,
    ``duplicate``, or ``ignored`` for a link Sutra did not make."""
    link = await mark_paid(session, reference, payment_id, at)
    if link is None:
        return "ignored"
    event = EVENT_ADAPTER.validate_python(
        {
            "id": event_id,
            "type": "payment.captured",
            "occurred_at": at,
            "data": {
                "order_id": link.order_id,
                "amount": str(amount),
                "currency": currency,
                "payment_id": payment_id,
                "provider": provider,
                "purpose": link.purpose,
            },
        }
    )
    [outcome] = await ingest(session, [event], settings=settings, api_key_id=None)
    return outcome
