"""The outbox: a channel with no provider configured keeps its messages in the ledger and
the logs, so the whole engine runs on a laptop and nothing leaves it."""

from __future__ import annotations

import logging
from datetime import datetime

from channels.base import OutgoingMessage, Receipt

log = logging.getLogger("sutra.outbox")


class OutboxChannel:
    provider = "outbox"
    can_look_up = False
    reports_status = False  # nothing reaches anyone, so nothing ever comes back

    async def send(self, message: OutgoingMessage) -> Receipt:
        log.info(
            "outbox %s to %s: %s",
            message.channel,
            message.to,
            message.subject or message.text[:200],
            extra={"message_id": str(message.message_id), "template": message.template},
        )
        return Receipt(provider=self.provider, provider_message_id=f"outbox-{message.message_id}")

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        return None  # resending to the outbox costs nothing and reaches no one
