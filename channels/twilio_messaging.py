"""SMS and WhatsApp through Twilio's Messages API, with the official ``twilio`` SDK."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from channels.base import (
    Channel,
    OutgoingMessage,
    PermanentSendError,
    Receipt,
    Suppress,
    TransientSendError,
)
from config.settings import Settings

# Twilio error codes that mean the address must not be messaged again on this channel.
_SUPPRESSING: dict[int, Suppress] = {
    21610: Suppress(scope="all", reason="stop"),  # recipient replied STOP
    21211: Suppress(scope="all", reason="invalid"),  # invalid 'To' number
    21614: Suppress(scope="all", reason="invalid"),  # not a mobile number
    21612: Suppress(scope="all", reason="invalid"),  # cannot route to this number
    63014: Suppress(scope="all", reason="blocked"),  # WhatsApp: the user blocked the sender
    63024: Suppress(scope="all", reason="invalid"),  # WhatsApp: invalid recipient
}


def whatsapp_address(number: str) -> str:
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


class TwilioMessaging:
    provider = "twilio"
    can_look_up = True
    reports_status = True

    def __init__(self, settings: Settings, channel: Channel, client: Client | None = None):
        assert settings.twilio_account_sid
        assert settings.twilio_auth_token
        self.channel = channel
        self._client = client or Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=TwilioHttpClient(timeout=settings.provider_timeout.total_seconds()),
        )
        self._client.api.base_url = settings.twilio_api_base_url
        self._service = settings.twilio_messaging_service_sid
        self._from = (
            settings.twilio_sms_from
            if channel == "sms"
            else (
                whatsapp_address(settings.twilio_whatsapp_from)
                if settings.twilio_whatsapp_from
                else None
            )
        )

    def _to(self, message: OutgoingMessage) -> str:
        return whatsapp_address(message.to) if self.channel == "whatsapp" else message.to

    def params(self, message: OutgoingMessage) -> dict[str, Any]:
        params: dict[str, Any] = {"to": self._to(message)}
        if self._from:
            params["from_"] = self._from
        elif self._service:
            params["messaging_service_sid"] = self._service
        if message.whatsapp_content_sid:
            params["content_sid"] = message.whatsapp_content_sid
            params["content_variables"] = json.dumps(message.whatsapp_variables or {})
        else:
            params["body"] = message.text
        if message.status_callback_url:
            params["status_callback"] = message.status_callback_url
        return params

    async def send(self, message: OutgoingMessage) -> Receipt:
        params = self.params(message)
        try:
            created = await asyncio.to_thread(self._client.messages.create, **params)
        except TwilioRestException as exc:
            raise _classify(exc) from exc
        except requests.ConnectionError as exc:
            # A refused or unresolvable connection never reached Twilio; a read timeout may have.
            not_sent = not isinstance(exc, requests.ReadTimeout)
            raise TransientSendError("network", str(exc), not_sent=not_sent) from exc
        except requests.Timeout as exc:
            raise TransientSendError("network", str(exc)) from exc
        return Receipt(provider=self.provider, provider_message_id=created.sid)

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        """Twilio keeps every message: look for ours among the latest to this number."""
        to = self._to(message)
        try:
            recent = await asyncio.to_thread(self._client.messages.list, to=to, limit=50)
        except TwilioRestException as exc:
            raise _classify(exc) from exc
        except requests.RequestException as exc:
            raise TransientSendError("network", str(exc)) from exc
        # Clocks differ a little; a minute of slack cannot mistake another step's message,
        # whose body differs, for this one.
        earliest = since - timedelta(minutes=1)
        for sent in recent:
            created = sent.date_created
            if created is not None and created < earliest:
                continue
            if sent.direction and not sent.direction.startswith("outbound"):
                continue
            if message.whatsapp_content_sid or (sent.body or "").strip() == message.text.strip():
                return Receipt(provider=self.provider, provider_message_id=sent.sid)
        return None


def _classify(exc: TwilioRestException) -> Exception:
    status = int(exc.status or 0)
    code = int(exc.code) if exc.code else status
    if status == 429:
        return TransientSendError(str(code), exc.msg or "", not_sent=True)
    if status >= 500:
        # Rarely, Twilio keeps a message it answered 5xx for: leave it to the lookup.
        return TransientSendError(str(code), exc.msg or "")
    return PermanentSendError(str(code), exc.msg or "", suppress=_SUPPRESSING.get(code))
