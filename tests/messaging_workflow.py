"""A minimal journey for tests of the messaging layer: it sends what it is given through
the production ``Messenger`` and listens to replies like any journey."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts import search_attributes as sa
    from contracts.messages import (
        InboundMessageSignal,
        MessageOutcome,
        MessageRequest,
        MessageStatusUpdate,
    )
    from contracts.names import INBOUND_SIGNAL, MESSAGE_STATUS_SIGNAL
    from workflows.messaging import Messenger


class MessageTestInput(BaseModel):
    customer_id: str
    requests: list[MessageRequest]
    linger: timedelta = timedelta(0)


@workflow.defn(name="MessageTestWorkflow")
class MessageTestWorkflow:
    def __init__(self) -> None:
        self.messenger = Messenger()
        self.replies: list[InboundMessageSignal] = []

    @workflow.signal(name=MESSAGE_STATUS_SIGNAL)
    def message_status(self, update: MessageStatusUpdate) -> None:
        self.messenger.on_status(update)

    @workflow.signal(name=INBOUND_SIGNAL)
    def inbound_message(self, signal: InboundMessageSignal) -> None:
        self.replies.append(signal)

    @workflow.query(name="replies")
    def get_replies(self) -> list[InboundMessageSignal]:
        return self.replies

    @workflow.run
    async def run(self, input: MessageTestInput) -> list[MessageOutcome]:
        workflow.upsert_search_attributes([sa.CUSTOMER_ID.value_set(input.customer_id)])
        outcomes = [await self.messenger.send(request) for request in input.requests]
        if input.linger:
            await workflow.sleep(input.linger)
        return outcomes
