"""What every channel adapter is given and what it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from uuid import UUID

from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

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
    """Worth retrying. ``not_sent`` is True only when the provider certainly got nothing.

    ``answered``: the provider sent back an error (rather than the call timing out or
    breaking), so whatever it did with the request is done and a lookup now sees it.
    ``retry_after``: how long the provider asked us to wait (its ``Retry-After``)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        not_sent: bool = False,
        answered: bool = False,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.not_sent = not_sent
        self.answered = answered
        self.retry_after = retry_after


def answered(status: int) -> bool:
    """Whether an HTTP error came from the provider's application, which is done with the
    request, rather than from a gateway in front of it (502, 504), behind which the
    request may still be running."""
    return status not in (502, 504)


def retry_after(headers: Mapping[str, Any] | None) -> timedelta | None:
    """A response's ``Retry-After`` (delay-seconds or an HTTP-date), if it has a usable one."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        # urllib3's parser reads both forms; a date in the past is zero seconds.
        seconds = Retry().parse_retry_after(str(value))
    except InvalidHeader:
        return None
    return timedelta(seconds=seconds)


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
