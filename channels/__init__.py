"""Channel adapters behind one interface, chosen by settings: a provider when its
credentials are configured, the outbox otherwise."""

from __future__ import annotations

from channels.base import CHANNELS, Channel, ChannelAdapter
from channels.outbox import OutboxChannel
from config.settings import Settings


def build_adapters(settings: Settings) -> dict[Channel, ChannelAdapter]:
    adapters: dict[Channel, ChannelAdapter] = {}
    outboxed = settings.outboxed
    if settings.sendgrid_api_key and "email" not in outboxed:
        from channels.sendgrid_email import SendGridEmail

        adapters["email"] = SendGridEmail(settings)
    if settings.twilio_account_sid and settings.twilio_auth_token:
        from channels.twilio_messaging import TwilioMessaging

        for channel in CHANNELS[1:]:
            if channel not in outboxed:
                adapters[channel] = TwilioMessaging(settings, channel)
    outbox = OutboxChannel()
    for channel in CHANNELS:
        adapters.setdefault(channel, outbox)
    return adapters
