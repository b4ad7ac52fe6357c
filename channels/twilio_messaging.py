"""SMS and WhatsApp through Twilio's Messages API, with the official ``twilio`` SDK."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels.base import (
    Channel,
    OutgoingMessage,
    PermanentSendError,
    Receipt,
    Suppress,
    TransientSendError,
    answered,
    retry_after,
)
from config.settings import Settings

T = TypeVar("T")

# Twilio error codes that mean the address must not be messaged again on this channel.
_SUPPRESSING: dict[int, Suppress] = {
    21610: Suppress(scope="all", reason="stop"),  # recipient replied STOP
    21211: Suppress(scope="all", reason="invalid"),  # invalid 'To' number
    21614: Suppress(scope="all", reason="invalid"),  # not a mobile number
    21612: Suppress(scope="all", reason="invalid"),  # cannot route to this number
    63014: Suppress(scope="all", reason="blocked"),  # WhatsApp: the user blocked the sender
    63024: Suppress(scope="all", reason="invalid"),  # WhatsApp: invalid recipient
}


class _HeaderKeepingClient(TwilioHttpClient):
    """The SDK's ``TwilioRestException`` keeps the status and Twilio's error code but not
    the response headers, and the client's own ``last_response`` is shared by every thread.
    This keeps each thread's last response headers, so a 429's ``Retry-After`` survives."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self._local.headers = None
        response = super().request(*args, **kwargs)
        self._local.headers = response.headers
        return response

    def last_headers(self) -> Mapping[str, Any] | None:
        headers: Mapping[str, Any] | None = getattr(self._local, "headers", None)
        return headers


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
        self._http = _HeaderKeepingClient(timeout=settings.provider_timeout.total_seconds())
        self._client = client or Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=self._http,
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

    def _call(self, call: Callable[..., T], /, **params: Any) -> T:
        """One SDK call, in a worker thread: the thread that saw the response's headers."""
        try:
            return call(**params)
        except TwilioRestException as exc:
            code = int(exc.code) if exc.code else None
            status = int(exc.status or 0)
            raise _classify(status, code, exc.msg, self._http.last_headers()) from exc
        except TwilioException as exc:
            # A list page that failed: the SDK raises its base class with the bare response.
            response = next((a for a in exc.args if isinstance(a, Response)), None)
            if response is None:
                raise
            code, msg = _error_body(response.text)
            raise _classify(response.status_code, code, msg, response.headers) from exc

    async def send(self, message: OutgoingMessage) -> Receipt:
        params = self.params(message)
        try:
            created = await asyncio.to_thread(self._call, self._client.messages.create, **params)
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
            recent = await asyncio.to_thread(
                self._call, self._client.messages.list, to=to, limit=50
            )
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


def _classify(
    status: int, code: int | None, msg: str | None, headers: Mapping[str, Any] | None
) -> Exception:
    code = code or status
    if status == 429 or status >= 500:
        # A 429 turns the request away. Twilio may keep a message it answered 5xx for:
        # that one is left "sending", for the lookup on retry to find.
        return TransientSendError(
            str(code),
            msg or "",
            not_sent=status == 429,
            answered=answered(status),
            retry_after=retry_after(headers),
        )
    return PermanentSendError(str(code), msg or "", suppress=_SUPPRESSING.get(code))


def _error_body(text: str) -> tuple[int | None, str]:
    try:
        body = json.loads(text)
        return int(body["code"]), str(body.get("message") or "")
    except (ValueError, KeyError, TypeError):
        return None, text[:500]
