"""What every channel adapter is given and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol
from uuid import UUID

from contracts.messages import CHANNELS, Channel, Kind

__all__ = ["CHANNELS", "Channel", "Kind"]


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: UUID
    channel: Channel
    kind: Kind
    template: str
    to: str
    text: str
    subject: str | None = None
    html: str | None = None
    unsubscribe_url: str | None = None
    status_callback_url: str | None = None
    whatsapp_content_sid: str | None = None
    whatsapp_variables: dict[str, str] | None = None
    categories: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Receipt:
    provider: str
    provider_message_id: str | None


@dataclass(frozen=True)
class Suppress:
    """A provider error that also means: stop messaging this address on this channel."""

    scope: Literal["marketing", "all"]
    reason: str


class PermanentSendError(Exception):
    """The provider refused the message and would refuse it again: record, do not retry."""

    def __init__(self, code: str, message: str, suppress: Suppress | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.suppress = suppress


class TransientSendError(Exception):
    """Worth retrying. ``not_sent`` is True only when the provider certainly got nothing."""

    def __init__(self, code: str, message: str, *, not_sent: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.not_sent = not_sent


class ChannelAdapter(Protocol):
    provider: str
    # Whether a send cut off mid-call can be looked up at the provider afterwards.
    can_look_up: bool
    # Whether the provider reports on a message afterwards (delivered, bounced, failed).
    reports_status: bool

    async def send(self, message: OutgoingMessage) -> Receipt: ...

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        """The provider's record of this message if it was accepted after ``since``."""
        ...
