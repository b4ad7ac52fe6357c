"""A shop selling on the time-skipping server, for order-workflow tests: events go in as
intake and the dispatcher would put them, payment providers are the real SDKs against the
fake Razorpay/Stripe servers, and the shop's own webhook endpoint is a local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from temporalio.client import WorkflowHandle
from werkzeug.wrappers import Request, Response

from config.settings import Environment, Settings
from contracts.events import EVENT_ADAPTER
from contracts.messages import InboundMessageSignal
from contracts.names import INBOUND_SIGNAL, STATE_QUERY, TRANSITION_UPDATE
from contracts.orders import OrderState, TransitionRequest
from contracts.payment_policy import PaymentPolicy, UpfrontRule
from db.models import Event, Message, PaymentLink
from services.orders import moves
from services.orders.payments import record_capture
from tests.factories import customer, item, uid
from tests.providers.fake_payments import (
    RAZORPAY_KEY_ID,
    RAZORPAY_KEY_SECRET,
    STRIPE_API_KEY,
    FakeRazorpay,
    FakeStripe,
)
from tests.skipping_shop import SkippingShop

SHOP_SECRET = "shop-webhook-secret"


class ShopEndpoint:
    """The shop's backend receiving Sutra's signed notices."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.notices: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.fail_next = 0
        server.expect_request("/sutra-webhooks").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for("/sutra-webhooks")

    def _handle(self, request: Request) -> Response:
        body = request.get_data()
        stamp, _, digest = request.headers.get("X-Sutra-Signature", "").partition(",v1=")
        expected = hmac.new(
            SHOP_SECRET.encode(), f"{stamp.removeprefix('t=')}.".encode() + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, digest):
            self.bad_signatures += 1
            return Response(status=401)
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response(status=503)
        notice = json.loads(body)
        notice["idempotency_key"] = request.headers.get("Idempotency-Key")
        self.notices.append(notice)
        return Response(status=204)

    def types(self, order_id: str) -> list[str]:
        return [n["type"] for n in self.notices if n["order_id"] == order_id]


def order_settings(
    database_url: str,
    task_queue: str,
    razorpay: FakeRazorpay,
    stripe: FakeStripe,
    endpoint: ShopEndpoint,
    **policy: Any,
) -> Settings:
    """A shop taking 15% upfront on partial COD, paid through the fake Razorpay and Stripe,
    with its backend at ``endpoint``."""
    return Settings(
        env=Environment.test,
        database_url=database_url,
        temporal_task_queue=task_queue,
        razorpay_key_id=RAZORPAY_KEY_ID,
        razorpay_key_secret=RAZORPAY_KEY_SECRET,
        razorpay_base_url=razorpay.url,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe.url,
        payment_policy=PaymentPolicy(upfront=UpfrontRule(percent=Decimal(15)), **policy),
        shop_webhook_url=endpoint.url,
        shop_webhook_secret=SecretStr(SHOP_SECRET),
    )


class OrderShop(SkippingShop):
    """Orders of a shop on the time-skipping server."""

    async def place(
        self,
        payment_type: str,
        *,
        currency: str = "PKR",
        total: str = "4500.00",
        items: list[dict[str, Any]] | None = None,
        **data: Any,
    ) -> str:
        order_id = uid("ord")
        customer_id = uid("c")
        await self.send(
            {
                "id": uid("evt"),
                "type": "order.placed",
                "occurred_at": _iso(await self.now()),
                "customer": customer(customer_id, email=f"{customer_id}@example.com"),
                "data": {
                    "order_id": order_id,
                    "items": items or [item(unit_price=total)],
                    "total": total,
                    "currency": currency,
                    "payment_type": payment_type,
                    "payment_status": "pending",
                    **data,
                },
            }
        )
        return order_id

    async def event(
        self, type: str, order_id: str, event_id: str | None = None, **data: Any
    ) -> str:
        return await self.send(
            {
                "id": event_id or uid("evt"),
                "type": type,
                "occurred_at": _iso(await self.now()),
                "data": {"order_id": order_id, **data},
            }
        )

    async def provider_paid(
        self, order_id: str, *, payment_id: str, provider: str, event_id: str | None = None
    ) -> str:
        """What a verified provider webhook does (api/payment_webhooks.py)."""
        link = await self.link(order_id)
        event_id = event_id or f"{provider}:{uid('evt')}"
        async with self.sessionmaker() as session, session.begin():
            outcome = await record_capture(
                session,
                self.settings,
                event_id=event_id,
                reference=link.reference,
                payment_id=payment_id,
                amount=link.amount,
                currency=link.currency,
                provider=provider,
                at=await self.now(),
            )
        if outcome == "accepted":
            async with self.sessionmaker() as session:
                row = await session.get(Event, event_id)
            assert row is not None
            await self.deliver(EVENT_ADAPTER.validate_python(row.payload))
        return outcome

    async def reply(self, order_id: str, body: str) -> None:
        state = await self.state(order_id)
        assert state.customer_id is not None
        await self.handle(order_id).signal(
            INBOUND_SIGNAL,
            InboundMessageSignal(
                inbound_id=secrets.randbelow(2**31),
                customer_id=state.customer_id,
                channel="whatsapp",
                body=body,
                received_at=await self.now(),
            ),
        )

    async def transition(
        self, order_id: str, to: str, rpc_timeout: timedelta | None = None, **values: Any
    ) -> OrderState:
        return await self.handle(order_id).execute_update(
            TRANSITION_UPDATE,
            TransitionRequest.model_validate({"to": to, "by": "tests", **values}),
            result_type=OrderState,
            rpc_timeout=rpc_timeout,
        )

    async def move(
        self, order_id: str, to: str, within: timedelta = timedelta(seconds=30), **values: Any
    ) -> OrderState:
        """An ops move as the API makes it: signalled, then its answer read back."""
        request = TransitionRequest.model_validate({"to": to, "by": "tests", **values})
        return await moves.move(self.env.client, order_id, request, within=within)

    def handle(self, order_id: str) -> WorkflowHandle[Any, Any]:
        return self.env.client.get_workflow_handle(f"order/{order_id}")

    async def state(self, order_id: str) -> OrderState:
        return await self.handle(order_id).query(STATE_QUERY, result_type=OrderState)

    async def settle(self) -> None:
        """Let the workflow act on what it was just told (time-skipping queries can lag)."""
        await self.env.sleep(timedelta(seconds=1))

    async def link(self, order_id: str) -> PaymentLink:
        async with self.sessionmaker() as session:
            row = await session.scalar(
                select(PaymentLink)
                .where(PaymentLink.order_id == order_id)
                .order_by(PaymentLink.created_at)
            )
        assert row is not None, f"no payment link for {order_id}"
        return row

    async def templates(self, order_id: str) -> list[str]:
        """Messages the customer received, in order (the first channel that took each)."""
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(Message)
                .where(Message.order_id == order_id, Message.status.in_(("sent", "delivered")))
                .order_by(Message.created_at)
            )
            return [m.template for m in rows]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
