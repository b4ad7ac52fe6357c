"""An order's PaymentType and PaymentStatus search attributes, upserted whenever they
change, so ops find "partial-COD orders awaiting payment" in the Temporal UI. Orders that
started before the patch never upsert them (their histories hold no such command)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts import search_attributes as sa
    from contracts.orders import OrderState

PAYMENT_ATTRIBUTES_PATCH = "order-payment-search-attributes"


class PaymentAttributes:
    def __init__(self) -> None:
        self._published: tuple[str, str] | None = None

    def publish(self, state: OrderState) -> None:
        if state.payment_type is None:
            return
        payment = (state.payment_type, state.payment_status)
        if payment == self._published or not workflow.patched(PAYMENT_ATTRIBUTES_PATCH):
            return
        self._published = payment
        workflow.upsert_search_attributes(
            [sa.PAYMENT_TYPE.value_set(payment[0]), sa.PAYMENT_STATUS.value_set(payment[1])]
        )
