"""Contracts of messaging: what a workflow asks to send, and what it is told back."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

Channel = Literal["email", "sms", "whatsapp"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "whatsapp")
Kind = Literal["marketing", "transactional"]
# The ledger's statuses (API.md): queued, sent, delivered, opened, clicked, bounced, failed,
# suppressed; "sending" marks a provider call under way.
Status = Literal[
    "queued", "sending", "sent", "delivered", "opened", "clicked", "bounced", "failed", "suppressed"
]

SEND_MESSAGE = "send_message"
ABANDON_MESSAGE = "abandon_message"


class QuietHours(BaseModel):
    start: time = time(21, 0)
    end: time = time(9, 0)


class MessageRequest(BaseModel):
    """One message a journey wants to send (one step), in channel preference order."""

    key: str = Field(description="Deterministic: the workflow id and the step")
    customer_id: str
    channels: list[Channel] = Field(min_length=1)
    template: str
    kind: Kind = "marketing"
    context: dict[str, Any] = Field(default_factory=dict)
    # "default": the installation's quiet hours; None: this message ignores quiet hours.
    quiet_hours: QuietHours | Literal["default"] | None = "default"
    # None: the installation's default; zero: no cap (a marketer's test run).
    frequency_cap: timedelta | None = None
    cap_policy: Literal["defer", "skip"] = "defer"
    # How long after a send to watch for a bounce before the step counts as done.
    fallback_window: timedelta = timedelta(minutes=10)
    # One attempt of the send activity; a worker that dies mid-send is noticed after this.
    send_timeout: timedelta = timedelta(seconds=30)
    workflow_id: str | None = None
    rule_id: str | None = None
    rule_version: int | None = None
    step: str | None = None
    variant: str | None = None
    cart_id: str | None = None
    order_id: str | None = None
    coupon_code: str | None = None
    # The journey is in its rule's holdout group: recorded as suppressed, never sent.
    held_out: bool = False


class SendMessageInput(BaseModel):
    request: MessageRequest
    attempt: int = 1
    exclude_channels: list[Channel] = Field(default_factory=list)

    @property
    def ledger_key(self) -> str:
        return f"{self.request.key}#{self.attempt}"


class AbandonMessageInput(BaseModel):
    """A deferred message whose journey ended before it could go out: its ledger row,
    still ``queued``, becomes ``suppressed`` with the reason."""

    ledger_key: str
    reason: str


class SendMessageResult(BaseModel):
    # sent: handed to the provider (or outbox); deferred: try again at ``until``;
    # suppressed: not sent, and never will be for this step; failed: the provider refused.
    status: Literal["sent", "deferred", "suppressed", "failed"]
    message_id: UUID | None = None
    channel: Channel | None = None
    until: datetime | None = None
    reason: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    # False: this provider never reports on a message (the outbox), so there is no bounce
    # to wait for and no fallback watch to keep.
    reports: bool = True


class MessageStatusUpdate(BaseModel):
    """Signal ``message_status``: a provider reported on a message this workflow sent."""

    message_id: UUID
    key: str
    channel: Channel
    status: Status
    error_code: str | None = None


class InboundMessageSignal(BaseModel):
    """Signal ``inbound_message``: the customer replied by SMS or WhatsApp."""

    inbound_id: int
    customer_id: str
    channel: Channel
    body: str
    keyword: str | None = None
    received_at: datetime


class MessageOutcome(BaseModel):
    status: Literal["sent", "delivered", "suppressed", "failed"]
    channel: Channel | None = None
    message_id: UUID | None = None
    reason: str | None = None
    attempts: int = 1
