"""Activities of the order workflow: the payment policy, payment links, refunds, telling
the shop, and the order's row in the read model. Provider refusals that no retry can fix
fail without retrying."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.clock import server_now
from config.settings import Settings
from contracts.order_facts import SAVE_ORDER, SaveOrderInput
from contracts.orders import (
    CANCEL_PAYMENT_LINK,
    CREATE_PAYMENT_LINK,
    NOTIFY_SHOP,
    PREPARE_ORDER,
    REFUND_PAYMENT,
    CancelLinkInput,
    CancelLinkResult,
    CreateLinkInput,
    PaymentLinkInfo,
    PrepareOrderInput,
    PrepareOrderResult,
    RefundInput,
    ShopNotice,
)
from contracts.payment_policy import Line, quantize, upfront_split
from payments.base import PaymentError, PaymentProvider
from services.customers import profiles
from services.orders import read_model, shop_webhooks
from services.orders.payments import PaymentLedger


def _refused(exc: PaymentError) -> ApplicationError:
    return ApplicationError(str(exc), exc.code, type="PaymentRefused", non_retryable=True)


class OrderActivities:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        providers: dict[str, PaymentProvider] | None = None,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._ledger = PaymentLedger(settings, sessionmaker, providers)

    @activity.defn(name=PREPARE_ORDER)
    async def prepare_order(self, input: PrepareOrderInput) -> PrepareOrderResult:
        """The policy in force when the order was placed, and the amounts it implies. The
        workflow keeps the answer: a policy changed later never reprices a running order."""
        policy = self._settings.payment_policy
        placed = input.placed
        if placed.payment_type != "partial_cod":
            return PrepareOrderResult(
                policy=policy,
                upfront_amount=quantize(Decimal(0), placed.currency),
                remaining_amount=placed.total,
            )
        if placed.upfront_amount is not None:  # the shop decided: its numbers stand
            remaining = placed.remaining_amount
            if remaining is None:
                remaining = placed.total - placed.upfront_amount
            return PrepareOrderResult(
                policy=policy, upfront_amount=placed.upfront_amount, remaining_amount=remaining
            )
        lines = [
            Line(
                sku=i.sku,
                quantity=i.quantity,
                unit_price=i.unit_price,
                category=i.category,
                product_id=i.product_id,
            )
            for i in placed.items
        ]
        split = upfront_split(policy.upfront, lines, placed.total, placed.currency)
        return PrepareOrderResult(
            policy=policy, upfront_amount=split.upfront, remaining_amount=split.remaining
        )

    @activity.defn(name=CREATE_PAYMENT_LINK)
    async def create_payment_link(self, input: CreateLinkInput) -> PaymentLinkInfo:
        async with self._sessionmaker() as session:
            customer: dict[str, Any] = await profiles.customer_context(session, input.customer_id)
        try:
            return await self._ledger.create_link(input, customer)
        except PaymentError as exc:
            if exc.permanent:
                raise _refused(exc) from exc
            raise

    @activity.defn(name=CANCEL_PAYMENT_LINK)
    async def cancel_payment_link(self, input: CancelLinkInput) -> CancelLinkResult:
        try:
            return await self._ledger.cancel_link(input.reference, server_now())
        except PaymentError as exc:
            if exc.permanent:
                raise _refused(exc) from exc
            raise

    @activity.defn(name=REFUND_PAYMENT)
    async def refund_payment(self, input: RefundInput) -> str:
        try:
            return await self._ledger.refund(input)
        except PaymentError as exc:
            if exc.permanent:
                await self._ledger.refund_failed(input.key, str(exc))
                raise _refused(exc) from exc
            raise

    @activity.defn(name=NOTIFY_SHOP)
    async def notify_shop(self, notice: ShopNotice) -> str:
        return await shop_webhooks.deliver(self._settings, notice)

    @activity.defn(name=SAVE_ORDER)
    async def save_order(self, write: SaveOrderInput) -> None:
        """Upsert the order's row; an older or repeated write leaves it as it is."""
        async with self._sessionmaker() as session, session.begin():
            await read_model.save(session, write)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_order,
            self.create_payment_link,
            self.cancel_payment_link,
            self.refund_payment,
            self.notify_shop,
            self.save_order,
        ]
